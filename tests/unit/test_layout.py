"""The package's layout rules (README "Layout"), checked on the source so the build fails when
they break:

- `policy` imports nothing else from the package;
- `asterisk`, `store` and `live` import `policy`, and of each other (and of `service`) only the
  imports listed in CORE_CROSS_IMPORTS, each with the reason it is needed;
- `cli` runs the operations through `ops` (and uses policy/service/store values to parse and
  render) but never opens or drives the store itself: no `callpolicy.store.sqlite`, no `Store`;
  `ops` never imports `cli` (the HTTP API will use it the same way);
- each CP_* variable, AGI environment key and the enforce context name is written in one Python
  module only: the Asterisk contract (`asterisk/variables.py`);
- every store backend implements the store's interface (`StoreBackend`) with the same
  signatures, and offers callers nothing outside it.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from callpolicy.store import Store, StoreBackend

AGI = Path(__file__).resolve().parents[2] / "agi"
PACKAGE = AGI / "callpolicy"
CONTRACT = "callpolicy.asterisk.variables"
CORE = ("asterisk", "store", "live")

# Utilities that know nothing of callpolicy (checked below): any layer may use them.
LEAF_UTILITIES = {"callpolicy.service.logging", "callpolicy.service.connection_slots",
                  "callpolicy.service.waiting"}

# (importing module, imported module) between the core sub-packages, or from the core up to
# `service`, that exist and are needed. A new one fails the test: put it where it belongs, or
# add it here with its reason. A stale one fails too, so that the list stays true.
CORE_CROSS_IMPORTS = {
    # AmiLink is configured by the [ami] section's settings record.
    ("callpolicy.asterisk.ami", "callpolicy.service.config"),
    # Revocation hangs up through AMI and re-reads the CP_* variables of live channels.
    ("callpolicy.live.control", "callpolicy.asterisk.ami"),
    ("callpolicy.live.control", "callpolicy.asterisk.variables"),
    # Live calls and record writing are counted in the daemon's metrics.
    ("callpolicy.live.control", "callpolicy.service.metrics"),
    ("callpolicy.live.records_writer", "callpolicy.service.metrics"),
    # The writer stores the records (through the store's package interface).
    ("callpolicy.live.records_writer", "callpolicy.store"),
    # A call record is the row of the calls table: its fields and timestamp format; the
    # store's interface takes and gives CallRecords.
    ("callpolicy.store.interface", "callpolicy.live.records"),
    ("callpolicy.store.sqlite.calls", "callpolicy.live.records"),
    # The cluster tables hold the live table's rows (PublishedCall) and fill the in-memory
    # view of the other nodes (OtherNodes) that the decisions count.
    ("callpolicy.store.postgres.cluster", "callpolicy.live.cluster"),
}

CP_NAME = re.compile(r"\bCP_[A-Z][A-Z_]*\b")
# The keys of res_agi's environment block (Asterisk 22, res_agi.c setup_env).
AGI_KEY = re.compile(
    r"\bagi_(request|channel|language|type|uniqueid|version|callerid|calleridname|callingpres"
    r"|callingani2|callington|callingtns|dnid|rdnis|context|extension|priority|enhanced"
    r"|accountcode|threadid|linkedid|network|network_script|arg_\d*)\b")
CONTEXT = re.compile(r"\bcallpolicy-enforce\b")


def module_name(path: Path) -> str:
    if path == AGI / "fallback-agi":
        return "fallback-agi"
    parts = list(path.relative_to(AGI).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, ast.Module]:
    paths = [*sorted(PACKAGE.rglob("*.py")), AGI / "fallback-agi"]
    assert len(paths) > 30
    return {module_name(path): ast.parse(path.read_text(), str(path)) for path in paths}


def imports(name: str, tree: ast.Module) -> set[str]:
    """The callpolicy modules `name` imports (relative imports resolved)."""
    package = name.split(".") if name in PACKAGE_NAMES else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
    return {module for module in found if module.split(".")[0] == "callpolicy"}


PACKAGE_NAMES = {module_name(path) for path in PACKAGE.rglob("__init__.py")}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_policy_imports_nothing_else_from_the_package() -> None:
    outside = {(name, target) for name, tree in sources().items() if layer(name) == "policy"
               for target in imports(name, tree) if layer(target) != "policy"}
    assert outside == set()


def test_leaf_utilities_import_nothing_from_the_package() -> None:
    trees = sources()
    assert {name: imports(name, trees[name]) for name in LEAF_UTILITIES} \
        == {name: set() for name in LEAF_UTILITIES}


def test_core_layers_import_policy_and_only_the_listed_others() -> None:
    crossing = {(name, target) for name, tree in sources().items() if layer(name) in CORE
                for target in imports(name, tree)
                if layer(target) not in (layer(name), "policy")
                and target not in LEAF_UTILITIES}
    assert crossing - CORE_CROSS_IMPORTS == set(), "new cross-import: see CORE_CROSS_IMPORTS"
    assert CORE_CROSS_IMPORTS - crossing == set(), "stale entry in CORE_CROSS_IMPORTS"


def test_the_store_is_used_through_its_package_by_the_other_core_layers() -> None:
    inside = {(name, target) for name, tree in sources().items()
              if layer(name) in CORE and layer(name) != "store"
              for target in imports(name, tree) if target.startswith("callpolicy.store.")}
    assert inside == set()


# The CLI modules that run operations (the others parse, render, or run the daemon).
CLI_COMMANDS = {"customers", "exceptions", "limits", "calls", "inspect"}


def test_the_cli_runs_operations_through_ops_and_never_drives_the_store() -> None:
    trees = sources()
    cli = {name: tree for name, tree in trees.items() if layer(name) == "cli"}
    assert {f"callpolicy.cli.{m}" for m in CLI_COMMANDS} <= cli.keys()
    assert {name for name, tree in cli.items() if name.split(".")[-1] in CLI_COMMANDS
            and not any(layer(target) == "ops" for target in imports(name, tree))} == set()
    assert {(name, target) for name, tree in cli.items() for target in imports(name, tree)
            if target == "callpolicy.store.sqlite"
            or target.startswith("callpolicy.store.sqlite.")} == set()
    assert {name for name, tree in cli.items() if "Store" in identifiers(tree)} == set()


def test_ops_never_imports_the_cli_nor_the_sqlite_backend() -> None:
    ops = {name: tree for name, tree in sources().items() if layer(name) == "ops"}
    assert "callpolicy.ops.customers" in ops
    assert {(name, target) for name, tree in ops.items() for target in imports(name, tree)
            if layer(target) == "cli" or target == "callpolicy.store.sqlite"
            or target.startswith("callpolicy.store.sqlite.")} == set()


def identifiers(tree: ast.Module) -> set[str]:
    """Every name a module uses, imports or reaches as an attribute."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.alias):
            found.add(node.asname or node.name.split(".")[-1])
    return found


def docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def literal_homes(pattern: re.Pattern[str]) -> dict[str, set[str]]:
    """Each match of `pattern` in a string literal (docstrings aside) -> the modules writing it."""
    homes: dict[str, set[str]] = {}
    for name, tree in sources().items():
        skip = docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in skip:
                for match in pattern.finditer(node.value):
                    homes.setdefault(match.group(0), set()).add(name)
    return homes


def test_each_cp_variable_is_named_in_the_contract_only() -> None:
    homes = literal_homes(CP_NAME)
    assert {"CP_ACTION", "CP_REQUEST", "CP_SOURCE"} <= homes.keys()
    assert {name: where for name, where in homes.items() if where != {CONTRACT}} == {}


def test_each_agi_environment_key_is_named_in_the_contract_only() -> None:
    homes = literal_homes(AGI_KEY)
    assert {"agi_request", "agi_uniqueid", "agi_channel", "agi_linkedid"} <= homes.keys()
    assert {key: where for key, where in homes.items() if where != {CONTRACT}} == {}


def test_the_enforce_context_is_named_in_the_contract_only() -> None:
    assert literal_homes(CONTEXT) == {"callpolicy-enforce": {CONTRACT}}


def test_the_user_event_names_are_named_in_the_contract_only() -> None:
    homes = literal_homes(re.compile(r"\bCallpolicy(Fallback|LastResort)\b"))
    assert homes == {"CallpolicyFallback": {CONTRACT}, "CallpolicyLastResort": {CONTRACT}}


# Every store backend; a second one (PostgreSQL) is added here.
BACKENDS = [Store]
# What a backend may have outside the interface: opening is its own (a path, a URL).
BACKEND_OWN = {"open"}


def interface_methods() -> dict[str, Callable[..., Any]]:
    return {name: member for name, member in vars(StoreBackend).items()
            if inspect.isfunction(member) and member.__qualname__.startswith("StoreBackend.")}


def annotations(cls: type) -> dict[str, Any]:
    return {name: kind for klass in reversed(cls.__mro__)
            for name, kind in vars(klass).get("__annotations__", {}).items()}


def test_the_interface_names_the_operations_callers_use() -> None:
    assert {"customer", "import_customers", "suspend", "add_unblock", "set_limits",
            "record_calls", "load_customers", "audit_high_water", "close"} \
        <= interface_methods().keys()


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: f"{b.__module__}.{b.__name__}")
def test_a_backend_has_every_method_of_the_interface_with_its_signature(backend: type) -> None:
    problems = []
    for name, wanted in interface_methods().items():
        method = getattr(backend, name, None)
        if method is None:
            problems.append(f"{name}: missing")
            continue
        if inspect.iscoroutinefunction(method) != inspect.iscoroutinefunction(wanted):
            problems.append(f"{name}: async def in one, not in the other")
        want, got = inspect.signature(wanted), inspect.signature(method)
        # A default of `...` in the interface leaves the value to the backend.
        got = got.replace(parameters=[
            p.replace(default=...) if want.parameters.get(p.name, p).default is ... else p
            for p in got.parameters.values()])
        if got != want:
            problems.append(f"{name}: {got}, the interface says {want}")
    attributes = annotations(StoreBackend)
    problems += [f"attribute {name}: missing or not {kind}" for name, kind in attributes.items()
                 if annotations(backend).get(name) != kind]
    assert problems == []


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: f"{b.__module__}.{b.__name__}")
def test_a_backend_offers_nothing_outside_the_interface(backend: type) -> None:
    """A caller using a method of one backend only would break on the others: put it in the
    interface (and in every backend)."""
    public = {name for name in dir(backend) if not name.startswith("_")}
    assert public - interface_methods().keys() - annotations(StoreBackend).keys() \
        - BACKEND_OWN == set()


MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_REASON = re.compile(r"#.*\blong:\s*\S")


def test_no_long_module_or_function_without_a_reason_next_to_it() -> None:
    """README "Layout": no module over ~400 lines, no function over ~60 without a reason in a
    `# long: …` comment on the line before its `def` (or decorator), on the `def`, or on its
    first body line."""
    long_modules, long_functions = [], []
    for path in [*sorted(PACKAGE.rglob("*.py")), AGI / "fallback-agi"]:
        name, lines = module_name(path), path.read_text().splitlines()
        if len(lines) > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines), str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            # lines are 1-based: from the line before the def to the first body line
            near = lines[max(first - 2, 0):node.body[0].lineno]
            if length > MAX_FUNCTION_LINES and not any(LONG_REASON.search(x) for x in near):
                long_functions.append(f"{name}.{node.name} (line {node.lineno}): {length} lines")
    assert long_modules == [], f"split them (at most {MAX_MODULE_LINES} lines)"
    assert long_functions == [], (f"split them (at most {MAX_FUNCTION_LINES} lines) or write "
                                  "the reason in a '# long: …' comment next to the def")


def test_test_files_have_unique_basenames() -> None:
    """pytest imports test modules by basename (no packages under tests/): two files of one
    name stop the whole run at collection."""
    tests = Path(__file__).resolve().parents[1]
    names = [path.name for path in tests.rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
