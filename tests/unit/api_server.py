"""A live HTTP API for the tests: uvicorn on a free loopback port, in a thread of the test
process, over a real SQLite database in tmp_path with the demo customers, one token per
scope in a real token file."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import APIRouter

from callpolicy.api import create_app
from callpolicy.api.tokens import add_token
from callpolicy.service.config import load_settings
from callpolicy.store import Actor, open_store
from callpolicy.store.import_file import read_import_file
from ports import free_port

REPO = Path(__file__).resolve().parents[2]
SCOPES = ("read", "billing", "ops")



@dataclass
class LiveApi:
    url: str
    tokens: dict[str, str]  # scope -> token (named "<scope>-bot")
    db: Path
    config: Path
    token_file: Path

    def client(self, scope: str | None = "ops", **headers: str) -> httpx.Client:
        auth = {"Authorization": f"Bearer {self.tokens[scope]}"} if scope else {}
        return httpx.Client(base_url=self.url, headers={**auth, **headers}, timeout=10,
                            trust_env=False)

    def audit_count(self) -> int:
        with self.client("read") as client:
            return len(client.get("/v1/audit", params={"limit": 100000}).json())


def write_config(tmp_path: Path, *, metrics_port: int | None = None) -> Path:
    config = tmp_path / "callpolicy.toml"
    config.write_text(
        f'[store]\npath = "cp.db"\n[metrics]\nlisten = "127.0.0.1:{metrics_port or free_port()}"'
        '\n[log]\nformat = "json"\n[api]\ntokens = "api-tokens.toml"\n')
    return config


def import_demo(db: Path) -> None:
    from callpolicy.service.config import load_zones

    async def run() -> None:
        plan = read_import_file(REPO / "config" / "demo-customers.toml", load_zones())
        assert not plan.errors
        async with await open_store(db, create=True) as store:
            await store.import_customers(plan.records, Actor("tests", "T-0", "setup"))

    asyncio.run(run())


@contextlib.contextmanager
def serve(tmp_path: Path, *, metrics_port: int | None = None,
          routers: Sequence[APIRouter] = ()) -> Iterator[LiveApi]:
    config = write_config(tmp_path, metrics_port=metrics_port)
    import_demo(tmp_path / "cp.db")
    token_file = tmp_path / "api-tokens.toml"
    tokens = {scope: add_token(token_file, f"{scope}-bot", [scope]) for scope in SCOPES}
    settings = load_settings(str(config))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound here: no other test can take the port meanwhile
    port = sock.getsockname()[1]
    app = create_app(settings, token_file, routers=routers)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.02)
    try:
        yield LiveApi(f"http://127.0.0.1:{port}", tokens, tmp_path / "cp.db", config,
                      token_file)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def daemon_status() -> dict:
    """A healthy daemon's /status document (as service/status.py builds it, trimmed)."""
    from datetime import UTC, datetime

    return {"published_at": datetime.now(UTC).isoformat(), "daemon": {"node": "pbx-a"},
            "ami": {"state": "connected", "since": None},
            "fraud_guard": {"concurrency_enforced": True, "detail": ""},
            "snapshot": {"age_s": 0.1, "audit_high_water": 3},
            "live_calls": {"up": 0}, "decisions": {}}
