"""asterisk-docker/compose.yaml, checked as far as it can be without an engine: it parses, it
names exactly the images scripts/images.sh builds (from the same Dockerfiles), every file it
mounts exists, and every address:port it documents is one the config sets.

PyYAML is not a dependency of callpolicy: the file is parsed by this interpreter's yaml if it
has one, else by the system python3's (Debian's python3-yaml, scripts/install-deps.sh)."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "asterisk-docker" / "compose.yaml"
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?-)([^}]*)|(:?\?)[^}]*)?\}")


def load_compose() -> dict:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        parsed = subprocess.run(
            ["/usr/bin/python3", "-c",
             "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
            stdin=COMPOSE.open(), capture_output=True, text=True, timeout=30, check=False)
        if parsed.returncode != 0:
            pytest.fail(f"cannot parse {COMPOSE} (needs python3-yaml, scripts/install-deps.sh):"
                        f" {parsed.stderr.strip()[-500:]}", pytrace=False)
        return json.loads(parsed.stdout)
    return yaml.safe_load(COMPOSE.read_text())


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


def config_endpoints() -> set[str]:
    """Every address:port the repo's config sets (daemon, Asterisk, dialplan)."""
    config = tomllib.loads((REPO / "config" / "callpolicy.toml").read_text())
    found = {config["agi"]["listen"], config["metrics"]["listen"],
             f"{config['ami']['host']}:{config['ami']['port']}"}
    manager = (REPO / "config" / "asterisk" / "manager.conf").read_text()
    bind = re.search(r"^bindaddr\s*=\s*(\S+)", manager, re.M)
    port = re.search(r"^port\s*=\s*(\d+)", manager, re.M)
    assert bind and port, "manager.conf has no bindaddr/port"
    found.add(f"{bind.group(1)}:{port.group(1)}")
    pjsip = (REPO / "config" / "asterisk" / "pjsip.conf").read_text()
    found |= set(re.findall(r"^bind\s*=\s*(\S+:\d+)", pjsip, re.M))
    found |= set(re.findall(r"agi://([\d.]+:\d+)", (REPO / "dialplan" / "extensions.conf")
                            .read_text()))
    return found


def test_compose_names_the_images_that_make_image_builds() -> None:
    services = load_compose()["services"]
    images = built_images()
    named = {svc["image"]: svc["build"] for svc in services.values()}
    assert set(named) == set(images), (named, images)
    for image, build in named.items():
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == REPO, (image, build)
        assert build["dockerfile"] == images[image], (image, build, images)
        assert (context / build["dockerfile"]).is_file(), build


def test_every_file_compose_mounts_exists_and_named_volumes_are_declared() -> None:
    compose = load_compose()
    declared = set(compose.get("volumes") or {})
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
            host = (COMPOSE.parent / path).resolve()
            assert host.exists(), f"{name} mounts {host}, which does not exist"
    # the daemon's --config is a mounted file
    daemon = compose["services"]["callpolicy"]
    config_path = daemon["command"][daemon["command"].index("--config") + 1]
    assert ("callpolicy", config_path) in mounts, mounts


def test_every_port_compose_documents_matches_the_config() -> None:
    compose = load_compose()
    for name, svc in compose["services"].items():
        # host networking: the config's addresses are the ones that are bound
        assert svc.get("network_mode") == "host" and "ports" not in svc, name
    documented = set(re.findall(r"\b(\d+\.\d+\.\d+\.\d+:\d+)", COMPOSE.read_text()))
    assert documented, "compose.yaml documents no address:port"
    endpoints = config_endpoints()
    assert documented <= endpoints, (documented - endpoints, endpoints)
