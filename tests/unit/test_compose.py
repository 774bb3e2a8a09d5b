"""asterisk-docker/compose.yaml (one node) and compose-cluster.yaml (PostgreSQL + two nodes),
checked as far as they can be without an engine: they parse, they name exactly the images
scripts/images.sh builds (from the same Dockerfiles), every file they mount exists, and every
address:port they document is one the config sets (for a cluster node: the config the node
scripts make, scripts/asterisk-node-config.sh and callpolicy-node-config.sh).

PyYAML is not a dependency of callpolicy: the file is parsed by this interpreter's yaml if it
has one, else by the system python3's (Debian's python3-yaml, scripts/install-deps.sh)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "asterisk-docker" / "compose.yaml"
CLUSTER = REPO / "asterisk-docker" / "compose-cluster.yaml"
POSTGRES_IMAGE = re.compile(r"^docker\.io/library/postgres:\d+$")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?-)([^}]*)|(:?\?)[^}]*)?\}")


def load_compose(path: Path = COMPOSE) -> dict:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        parsed = subprocess.run(
            ["/usr/bin/python3", "-c",
             "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
            stdin=path.open(), capture_output=True, text=True, timeout=30, check=False)
        if parsed.returncode != 0:
            pytest.fail(f"cannot parse {path} (needs python3-yaml, scripts/install-deps.sh):"
                        f" {parsed.stderr.strip()[-500:]}", pytrace=False)
        return json.loads(parsed.stdout)
    return yaml.safe_load(path.read_text())


def interpolate(text: str) -> str | None:
    """The value with compose's defaults; None if it needs a variable the operator must set."""
    required = False

    def value(match: re.Match[str]) -> str:
        nonlocal required
        if match.group(2):
            return match.group(3)
        required = True
        return ""

    result = VARIABLE.sub(value, text)
    return None if required else result


def built_images() -> dict[str, str]:
    """image name -> Dockerfile, as scripts/images.sh builds them."""
    names = subprocess.run([str(REPO / "scripts" / "images.sh"), "names"], capture_output=True,
                           text=True, timeout=30, check=True).stdout
    return dict(line.split() for line in names.splitlines())


def config_endpoints(config_text: str | None = None, etc: Path | None = None) -> set[str]:
    """Every address:port a config sets (daemon, Asterisk, dialplan): the repo's, or a node's
    (its daemon config's text, its Asterisk config directory)."""
    config = tomllib.loads(config_text or (REPO / "config" / "callpolicy.toml").read_text())
    found = {config["agi"]["listen"], config["metrics"]["listen"],
             f"{config['ami']['host']}:{config['ami']['port']}"}
    manager = ((etc or REPO / "config" / "asterisk") / "manager.conf").read_text()
    bind = re.search(r"^bindaddr\s*=\s*(\S+)", manager, re.M)
    port = re.search(r"^port\s*=\s*(\d+)", manager, re.M)
    assert bind and port, "manager.conf has no bindaddr/port"
    found.add(f"{bind.group(1)}:{port.group(1)}")
    pjsip = ((etc or REPO / "config" / "asterisk") / "pjsip.conf").read_text()
    found |= set(re.findall(r"^bind\s*=\s*(\S+:\d+)", pjsip, re.M))
    found |= set(re.findall(r"agi://([\d.]+:\d+)", ((etc or REPO / "dialplan")
                                                     / "extensions.conf").read_text()))
    return found


def node_endpoints(ip: str, tmp: Path) -> set[str]:
    """What a cluster node at `ip` binds and reaches, from the node scripts' own output."""
    etc = tmp / ip
    etc.mkdir()
    for name in ("config/asterisk/asterisk.conf", "config/asterisk/manager.conf",
                 "config/asterisk/pjsip.conf",
                 "dialplan/extensions.conf", "config/demo/manager-users.conf"):
        shutil.copy(REPO / name, etc)
    subprocess.run([str(REPO / "scripts" / "asterisk-node-config.sh"), str(etc), ip],
                   check=True, timeout=30)
    config = subprocess.run([str(REPO / "scripts" / "callpolicy-node-config.sh"), ip,
                             "postgresql://cp@127.0.0.1:55432/callpolicy"], check=True,
                            capture_output=True, text=True, timeout=30).stdout
    return config_endpoints(config, etc)


@pytest.mark.parametrize("path", [COMPOSE, CLUSTER], ids=lambda p: p.name)
def test_compose_names_the_images_that_make_image_builds(path: Path) -> None:
    services = load_compose(path)["services"]
    images = built_images()
    named = {svc["image"]: svc["build"] for svc in services.values() if "build" in svc}
    others = {svc["image"] for svc in services.values() if "build" not in svc}
    assert all(POSTGRES_IMAGE.match(image) for image in others), others
    assert set(named) == set(images), (named, images)
    for image, build in named.items():
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == REPO, (image, build)
        assert build["dockerfile"] == images[image], (image, build, images)
        assert (context / build["dockerfile"]).is_file(), build


@pytest.mark.parametrize("path", [COMPOSE, CLUSTER], ids=lambda p: p.name)
def test_every_file_compose_mounts_exists_and_named_volumes_are_declared(path: Path) -> None:
    compose = load_compose(path)
    declared = set(compose.get("volumes") or {})
    compose_dir = path.parent
    mounts: list[tuple[str, str]] = []
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            spec = volume[:-3] if volume.endswith((":ro", ":rw")) else volume
            source, target = spec.rsplit(":", 1)
            mounts.append((name, target))
            path = interpolate(source)
            if path is None:
                continue  # the operator's file (e.g. the AMI secret), no default here
            if not path.startswith((".", "/")):
                assert path in declared, f"{name}: volume {path!r} not declared"
                continue
            host = (compose_dir / path).resolve()
            assert host.exists(), f"{name} mounts {host}, which does not exist"
    # every daemon's --config is a mounted file
    daemons = [name for name in compose["services"] if name.startswith("callpolicy")]
    assert daemons
    for name in daemons:
        command = compose["services"][name]["command"]
        assert (name, command[command.index("--config") + 1]) in mounts, mounts


def test_every_port_compose_documents_matches_the_config() -> None:
    compose = load_compose()
    for name, svc in compose["services"].items():
        # host networking: the config's addresses are the ones that are bound
        assert svc.get("network_mode") == "host" and "ports" not in svc, name
    documented = set(re.findall(r"\b(\d+\.\d+\.\d+\.\d+:\d+)", COMPOSE.read_text()))
    assert documented, "compose.yaml documents no address:port"
    endpoints = config_endpoints()
    assert documented <= endpoints, (documented - endpoints, endpoints)


def test_the_cluster_documents_the_addresses_its_nodes_get(tmp_path: Path) -> None:
    compose = load_compose(CLUSTER)
    for name, svc in compose["services"].items():
        assert svc.get("network_mode") == "host" and "ports" not in svc, name
    # each Asterisk node rewrites its config for its own address before Asterisk starts
    nodes = {}
    for name, svc in compose["services"].items():
        if name.startswith("asterisk-"):
            found = re.search(r"asterisk-node-config\.sh /etc/asterisk (127\.\d+\.\d+\.\d+) "
                              r"&& exec /usr/sbin/asterisk -f -n$", svc["entrypoint"][-1])
            assert found, svc["entrypoint"]
            nodes[name.removeprefix("asterisk-")] = found.group(1)
    assert nodes == {"a": "127.0.1.1", "b": "127.0.2.1"}, nodes
    assert {n.removeprefix("callpolicy-") for n in compose["services"]
            if n.startswith("callpolicy-")} == set(nodes)
    postgres = compose["services"]["postgres"]["command"]
    assert "listen_addresses=127.0.0.1" in postgres and "port=55432" in postgres, postgres
    endpoints = {"127.0.0.1:55432"}
    for ip in nodes.values():
        endpoints |= node_endpoints(ip, tmp_path)
    assert {f"{ip}:{port}" for ip in nodes.values() for port in (5060, 5038, 4573, 9464)} \
        <= endpoints, endpoints
    text = CLUSTER.read_text()
    documented = set(re.findall(r"\b(\d+\.\d+\.\d+\.\d+:\d+)", text))
    documented |= {f"127.0.2.1:{port}" for port in re.findall(  # "node B: the same on …"
        r"127\.0\.1\.1:(\d+)", text)} if "the same on 127.0.2.1" in text else set()
    assert documented - endpoints == set(), (documented - endpoints, endpoints)
    assert {"127.0.1.1:5060", "127.0.1.1:4573", "127.0.0.1:55432"} <= documented
