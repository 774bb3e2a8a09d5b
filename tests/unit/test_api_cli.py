"""`callpolicy api …`: tokens added and listed, `api serve` as a real process (loopback, the
[api] section), tokens never in its output, and the API reference (docs/api.md) current."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from api_server import free_port, import_demo

from callpolicy.api.settings import load_api_settings
from callpolicy.service.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPOLICY_")}
    return subprocess.run([sys.executable, "-m", "callpolicy.cli", "--config", str(config),
                           *args], capture_output=True, text=True, timeout=60, check=False,
                          env=env)


def test_token_add_prints_the_token_once_and_stores_its_hash(tmp_path: Path) -> None:
    config = tmp_path / "cp.toml"
    config.write_text('[store]\npath = "cp.db"\n[api]\ntokens = "tokens.toml"\n')
    added = cli("api", "token", "add", "--name", "billing-system", "--scope", "billing",
                config=config)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("cpt_") and len(token) > 40
    assert token not in added.stderr and token not in (tmp_path / "tokens.toml").read_text()
    again = cli("api", "token", "add", "--name", "billing-system", "--scope", "read",
                config=config)
    assert (again.returncode, again.stdout) == (1, "")  # a conflict, not a usage mistake
    assert "already" in again.stderr and "api token remove --name billing-system" in again.stderr
    bad = cli("api", "token", "add", "--name", "x", "--scope", "root", config=config)
    assert bad.returncode == 2
    cli("api", "token", "add", "--name", "support", "--scope", "read", "--scope", "ops",
        config=config)
    listed = cli("api", "token", "list", config=config)
    assert listed.stdout.split("\n")[1:3] == ["billing-system  billing",
                                              "support         read,ops"]
    before = (tmp_path / "tokens.toml").read_text()
    removed = cli("api", "token", "remove", "--name", "billing-system", config=config)
    assert removed.returncode == 0, removed.stderr
    listed = cli("api", "token", "list", "--json", config=config)
    assert listed.stdout == '{"name": "support", "scopes": ["read", "ops"]}\n'
    kept = (tmp_path / "tokens.toml").read_text()
    support = before[before.index('\n[[token]]\nname = "support"'):]
    assert kept.endswith(support) and "billing-system" not in kept  # the other one as it was
    missing = cli("api", "token", "remove", "--name", "billing-system", config=config)
    assert missing.returncode == 1
    assert missing.stderr == (f"callpolicy: error: no token named 'billing-system' in "
                              f"{tmp_path / 'tokens.toml'}\n")


def test_api_settings_defaults_and_bad_values(tmp_path: Path) -> None:
    config = tmp_path / "cp.toml"
    config.write_text('[api]\ntokens = "t.toml"\n')
    api = load_api_settings(load_settings(str(config)))
    assert (api.host, api.port, api.tokens) == ("127.0.0.1", 8480, tmp_path / "t.toml")
    for line, message in (('host = "localhost"', "api.host must be an IP literal"),
                          ("port = 70000", "api.port must be a whole number"),
                          ('tokenz = "x"', "unknown key api.tokenz")):
        config.write_text(f"[api]\n{line}\n")
        try:
            load_api_settings(load_settings(str(config)))
        except ConfigError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"{line} accepted")


def start_api_serve(config: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`callpolicy api serve` on a free port, once it says it listens (it binds first); a
    port another test took meanwhile ("cannot listen"): again on another."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPOLICY_")}
    for _ in range(5):
        port = free_port()
        config.write_text(re.sub(r"(?m)^port = \d+$", f"port = {port}", config.read_text()))
        server = subprocess.Popen([sys.executable, "-m", "callpolicy.cli", "--config",
                                   str(config), "api", "serve"], stdout=log.open("wb"),
                                  stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        while "listening on" not in log.read_text() and server.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        if server.poll() is None:
            return server, port
        assert "cannot listen on" in log.read_text(), log.read_text()
    raise AssertionError("no free port for the API")


def test_api_serve_answers_on_loopback_and_logs_no_token(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "cp.toml"
    config.write_text(f'[store]\npath = "cp.db"\n[log]\nformat = "json"\n[api]\nport = {port}\n'
                      'tokens = "tokens.toml"\n')
    missing = cli("api", "serve", config=config)
    assert missing.returncode == 1
    assert missing.stderr == (f"callpolicy: error: token file {tmp_path / 'tokens.toml'} does "
                              "not exist: create it with `callpolicy api token add --name N "
                              "--scope S` ([api] tokens, default api-tokens.toml beside the "
                              "config file)\n"), missing.stderr
    token = cli("api", "token", "add", "--name", "ops-a", "--scope", "ops",
                config=config).stdout.strip()
    import_demo(tmp_path / "cp.db")
    log = tmp_path / "serve.log"
    server, port = start_api_serve(config, log)
    try:
        url = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=auth, trust_env=False, timeout=10) as client:
            assert client.post("/v1/customers/acme/suspend",
                               json={"ticket": "T-1"}).status_code == 200
            assert client.post("/v1/customers/acme/suspend", json={"ticket": token}
                               ).status_code == 409
            assert client.get("/v1/customers/acme",
                              headers={"Authorization": f"Bearer {token}x"}).status_code == 401
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    output = log.read_text()
    assert "listening on http://127.0.0.1:" in output
    assert output.count("api_request") == 3  # every request logged, with the token's name
    assert "ops-a" in output
    assert token not in output and token[4:20] not in output


def test_api_serve_on_a_port_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "cp.toml"
        config.write_text(f'[store]\npath = "cp.db"\n[api]\nport = {port}\n'
                          'tokens = "tokens.toml"\n')
        assert cli("api", "token", "add", "--name", "a", "--scope", "ops",
                   config=config).returncode == 0
        result = cli("api", "serve", config=config)
    assert result.returncode == 1
    assert result.stderr == (f"callpolicy: error: cannot listen on 127.0.0.1:{port}: Address "
                             "already in use ([api] host and port)\n")


def test_the_api_socket_on_an_ipv6_host_is_ipv6_only(tmp_path: Path) -> None:
    from callpolicy.api.server import listen
    from callpolicy.api.settings import ApiSettings

    for host, v6only in (("::1", 1), ("127.0.0.1", None)):
        with listen(ApiSettings(host, 0, tmp_path / "t.toml")) as sock:
            assert sock.getsockname()[0] == host
            if v6only is not None:  # "::" must not also take every IPv4 address
                assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == v6only


def test_the_api_reference_is_generated_from_the_current_document() -> None:
    result = cli("api", "openapi", "--markdown", config=REPO / "config" / "callpolicy.toml")
    assert result.returncode == 0, result.stderr
    assert (REPO / "docs" / "api.md").read_text() == result.stdout, (
        "docs/api.md is stale: callpolicy api openapi --markdown > docs/api.md")
