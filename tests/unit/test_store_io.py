"""The database under stress (issue 10): a full disk, a read-only file system, an old schema.

Read commands open the database read-only and keep working; a write names the real cause
in one line, exit 1. The file systems are small tmpfs mounts (the tests run as root)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cli_runner import REPO, one_error_line, run

from callpolicy.store import Store

READS = (("customer", "show", "acme"), ("customer", "list"), ("audit",), ("unblocks",),
         ("calls",), ("limits", "show", "acme"), ("check", "--customer", "acme", "0905123456"))
WRITE = ("unblock", "acme", "--prefix", "0905", "--by", "alice", "--ticket", "T-1")


@contextmanager
def tmpfs(where: Path, size: str = "2m") -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(directory: Path) -> None:
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 512):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)


def imported(db: Path) -> None:
    result = run("customer", "import", str(REPO / "config" / "demo-customers.toml"), db=db)
    assert result.returncode == 0, result.stderr


def reads_work(db: Path) -> None:
    for command in READS:
        result = run(*command, db=db)
        assert result.returncode == 0, (command, result.stderr)
    assert "acme" in run("customer", "show", "acme", db=db).stdout
    assert "premium" in run("check", "--customer", "acme", "0905123456", db=db).stdout


def test_full_disk_reads_work_and_a_write_says_disk_full(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small") as small:
        db = small / "cp.db"
        imported(db)
        fill(small)
        reads_work(db)
        one_error_line(run(*WRITE, db=db), 1, "disk full")


def test_full_disk_under_an_open_connection_a_write_says_disk_full(tmp_path: Path) -> None:
    """With the daemon's connection open (the WAL index exists), the write fails at its
    statements or at COMMIT, after which SQLite has rolled back itself: the error must be
    the cause, not "cannot rollback - no transaction is active"."""
    with tmpfs(tmp_path / "small") as small:
        db = small / "cp.db"
        imported(db)
        holder = sqlite3.connect(db)
        try:
            holder.execute("SELECT count(*) FROM customers").fetchall()
            fill(small)
            reads_work(db)
            for command in (WRITE, ("customer", "suspend", "acme", "--by", "a",
                                    "--ticket", "T-2")):
                one_error_line(run(*command, db=db), 1, "disk full")
        finally:
            holder.close()


def test_read_only_file_system_reads_work_and_a_write_says_read_only(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro") as where:
        db = where / "cp.db"
        imported(db)
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        reads_work(db)
        one_error_line(run(*WRITE, db=db), 1, "read-only")


async def test_a_reader_writes_nothing_not_even_the_wal_set_up(tmp_path: Path) -> None:
    """A reader opens mode=ro: a database in rollback-journal mode (as a fresh copy of a
    backup may be) stays so, and nothing beside the file is created."""
    db = tmp_path / "cp.db"
    imported(db)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
    before = sorted(p.name for p in tmp_path.iterdir())
    async with await Store.open(db, readonly=True) as store:
        assert (await store.customer("acme"))["id"] == "acme"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_read_command_does_not_migrate_an_older_schema(tmp_path: Path) -> None:
    db = tmp_path / "cp.db"
    imported(db)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 3")
    result = run("customer", "show", "acme", db=db)
    one_error_line(result, 1, "older than this callpolicy")
    assert "a write command" in result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3  # not touched


def damage_calls_table(db: Path) -> None:
    """Overwrite the root page of the call records table: every other table still reads
    fine (a suspension would succeed), PRAGMA quick_check finds it."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'calls'"
                            ).fetchone()[0]
    with db.open("r+b") as raw:
        raw.seek((root - 1) * page_size)
        raw.write(bytes(range(256)) * (page_size // 256))


def test_a_damaged_database_is_refused_for_writing(tmp_path: Path) -> None:
    """Issue 10: the CLI printed success for a suspension on a malformed database."""
    db = tmp_path / "cp.db"
    imported(db)
    damage_calls_table(db)
    before = db.read_bytes()
    result = run("customer", "suspend", "acme", "--by", "a", "--ticket", "T-1", db=db)
    one_error_line(result, 1, "database")
    assert "integrity" in result.stderr or "damaged" in result.stderr, result.stderr
    assert db.read_bytes() == before  # nothing written
    assert not db.with_name("cp.db-wal").exists() or not db.with_name("cp.db-wal").stat().st_size
