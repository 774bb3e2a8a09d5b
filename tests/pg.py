"""A throw-away PostgreSQL server for the tests (session-scoped), one database per test.

The server refuses to run as root: as root, its data directory (in /tmp, owned by the
`postgres` user) is made with `initdb` and run with `pg_ctl` through `runuser -u postgres`
(as another user, directly). It listens on 127.0.0.1 at a free port, its unix socket in that
directory; fsync is off (test data). Stopped and removed at the end of the session; a run
killed outright leaves it running: `pg_ctl -D /tmp/callpolicy-pg-*/data stop`.
Missing binaries or user: the fixture FAILS with what to install (never a skip)."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ports import free_port


def _pg_bin() -> Path:
    """$CALLPOLICY_PG_BIN, else the newest Debian server (/usr/lib/postgresql/N/bin)."""
    if os.environ.get("CALLPOLICY_PG_BIN"):
        return Path(os.environ["CALLPOLICY_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
USER = "postgres"
START_TIMEOUT = 60  # seconds: initdb + start on a loaded 2-core machine
COMMAND_TIMEOUT = 30


@dataclass
class PgServer:
    port: int
    directory: Path
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement with psql (as the superuser); its output, unaligned."""
        done = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", database,
             "-c", statement],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
        if done.returncode:
            raise RuntimeError(f"psql {statement!r}: {done.stderr.strip()}")
        return done.stdout.strip()

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def start(self) -> None:
        """Start the server (bounded wait); RuntimeError if it does not come up."""
        options = (f"-p {self.port} -k {self.directory} -h 127.0.0.1 -F "
                   "-c max_connections=200 -c shared_buffers=32MB")
        _run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l",
             str(self.directory / "server.log"), "-o", options, "-w", "-t",
             str(START_TIMEOUT), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (a test of an outage: start() brings it back)."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*_as_server(), str(PG_BIN / "pg_ctl"), "-D", str(self.data),
                            "-m", mode, "-w", "-t", "30", "stop"],
                           capture_output=True, timeout=COMMAND_TIMEOUT, check=False)

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
        return self.url(name)


def _as_server() -> list[str]:
    """The server refuses to run as root: as root, run its commands as `postgres`."""
    return ["runuser", "-u", USER, "--"] if os.geteuid() == 0 else []


def _run(*command: str) -> None:
    done = subprocess.run([*_as_server(), *command], capture_output=True,
                          text=True, timeout=START_TIMEOUT, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[:2])}: {done.stdout}{done.stderr}".strip())


def _missing() -> str | None:
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "psql").exists():
        return (f"PostgreSQL server binaries not found in {PG_BIN} (apt-get install "
                "postgresql, or set CALLPOLICY_PG_BIN)")
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"no user {USER!r} to run PostgreSQL as (apt-get install postgresql)"
    if shutil.which("runuser") is None:
        return "runuser not found (util-linux)"
    return None


def start_server() -> PgServer:
    """A new server in a fresh directory, running; RuntimeError saying why not (what to
    install, or the server log's tail). `destroy` stops and removes it."""
    problem = _missing()
    if problem:
        raise RuntimeError(f"the PostgreSQL tests need a server: {problem}")
    directory = Path(tempfile.mkdtemp(prefix="callpolicy-pg-"))
    if os.geteuid() == 0:  # the server's own user must own its directory
        account = pwd.getpwnam(USER)
        os.chown(directory, account.pw_uid, account.pw_gid)
    server = PgServer(free_port(), directory)
    try:
        _run(str(PG_BIN / "initdb"), "-D", str(server.data), "-A", "trust", "-U", USER,
             "-E", "UTF8", "--locale=C", "--no-sync")
        server.start()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        log = directory / "server.log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        destroy(server)
        raise RuntimeError(f"PostgreSQL did not start: {exc}\n{tail}") from exc
    return server


def destroy(server: PgServer) -> None:
    server.stop("immediate")
    shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        server = start_server()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        destroy(server)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a fresh, empty database on the test server."""
    return pg_server.new_database()
