"""The fallback journal (alerts/fallback_journal.py): the fallback AGI appends its decisions,
the daemon's Alerter takes them as `fallback_decision` alerts, also after a downtime.

The fallback AGI writing it for real: test_fallback_agi.py; the whole path with `callpolicy
serve` and a webhook: test_fallback_alert_after_downtime below."""

from __future__ import annotations

import json
import multiprocessing
import signal
import time
from pathlib import Path

import pytest
from alert_receivers import WebhookReceiver, wait_until
from test_alerts_daemon import configure
from test_daemon import start
from test_fallback_agi import State, assert_clean_success, b64, base_env

from callpolicy.alerts import fallback_journal as fj
from callpolicy.alerts.alerter import Alerter
from callpolicy.alerts.config import parse_alerts
from callpolicy.service.metrics import Metrics
from fake_asterisk import agi_env_block

HOSTILE = ["x" * 10_000, 'a"b\\c\n{"at":1}\n', "\u2028\u2029\x00\x1b[31m", "é" * 500,
           "\ud800", "🙂" * 300]


def entry(n: int, **extra: str) -> dict[str, str]:
    return {"uniqueid": f"1700.{n}", "kind": "outbound", "endpoint": "acme-101",
            "customer": "acme", "number": "092101299", "action": "allow", "reason": "allowed",
            **extra}


def take_all(path: Path) -> fj.Taken:
    """Two rounds: the first renames the journal, the second reads the `.taking` file."""
    first = fj.take(path)
    assert first.entries == []
    return fj.take(path)


def test_append_then_take_round_trip(tmp_path: Path) -> None:
    path = fj.journal_path(tmp_path / "cp.db")
    assert path == tmp_path / "cp.db.fallback-journal.jsonl"
    assert fj.take(path) == fj.Taken([])  # nothing there: nothing done
    for n in range(3):
        assert fj.append(path, 1000.0 + n, entry(n))
    taken = take_all(path)
    assert [e.at for e in taken.entries] == [1000.0, 1001.0, 1002.0]
    assert taken.entries[1].values == entry(1)
    assert not taken.full and taken.unreadable == 0
    assert not path.exists() and not fj.taking_path(path).exists()
    # a decision appended while the journal was being taken lands in a new journal
    assert fj.append(path, 2000.0, entry(9))
    assert [e.values["uniqueid"] for e in take_all(path).entries] == ["1700.9"]


def test_a_taking_file_left_by_a_crash_is_read_first(tmp_path: Path) -> None:
    path = fj.journal_path(tmp_path / "cp.db")
    fj.append(path, 1.0, entry(1))
    assert fj.take(path).entries == []  # renamed ... and the daemon dies before reading it
    fj.append(path, 2.0, entry(2))  # a new journal meanwhile
    assert [e.values["uniqueid"] for e in fj.take(path).entries] == ["1700.1"]
    assert [e.values["uniqueid"] for e in take_all(path).entries] == ["1700.2"]


def test_a_full_journal_keeps_what_fits_and_says_so_once(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fj, "MAX_BYTES", 2000)
    path = fj.journal_path(tmp_path / "cp.db")
    kept = sum(fj.append(path, float(n), entry(n)) for n in range(50))
    assert 5 < kept < 20
    data = path.read_bytes()
    assert data.count(fj.FULL_LINE) == 1 and data.endswith(fj.FULL_LINE)
    assert len(data) <= 2000 + len(fj.FULL_LINE)
    taken = take_all(path)
    assert len(taken.entries) == kept and taken.full


def test_hostile_values_are_cut_and_stay_one_short_line(tmp_path: Path) -> None:
    path = fj.journal_path(tmp_path / "cp.db")
    values = dict(zip(fj.FIELDS, HOSTILE + HOSTILE, strict=False))
    values["extra"] = "not a field"
    fj.append(path, 5.0, values)
    data = path.read_bytes()
    assert data.count(b"\n") == 1 and len(data) < 4096
    [got] = take_all(path).entries
    assert set(got.values) == set(fj.FIELDS)
    assert all(v is not None and len(v) <= fj.MAX_VALUE for v in got.values.values())
    assert got.values["uniqueid"] == "x" * fj.MAX_VALUE


def test_lines_that_are_no_entry_are_skipped_and_counted(tmp_path: Path) -> None:
    path = fj.journal_path(tmp_path / "cp.db")
    path.write_bytes(b'not json\n[1,2]\n{"at":"NaN"}\n{"at":1e999}\n{"no_at":1}\n'
                     b'{"at":3,"customer":{"x":1},"number":42}\n' + b"[" * 100_000 + b"\n"
                     b'{"at":4,"uniqueid":"ok"}')
    taken = take_all(path)
    assert taken.unreadable == 6
    assert [(e.at, e.values["customer"], e.values["number"]) for e in taken.entries] == [
        (3.0, None, None), (4.0, None, None)]
    assert taken.entries[1].values["uniqueid"] == "ok"


def _writer(path: str, base: int) -> None:
    for n in range(200):
        fj.append(Path(path), float(n), entry(base + n, number="9" * 60, endpoint="e" * 64))


def test_concurrent_fallback_processes_never_interleave(tmp_path: Path) -> None:
    path = fj.journal_path(tmp_path / "cp.db")
    procs = [multiprocessing.get_context("spawn").Process(target=_writer,
                                                          args=(str(path), i * 1000))
             for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    taken = take_all(path)
    assert taken.unreadable == 0 and len(taken.entries) == 1200
    assert len({e.values["uniqueid"] for e in taken.entries}) == 1200


async def test_the_alerter_raises_journal_entries_at_their_time(tmp_path: Path) -> None:
    clock = [10_000.0]
    alerter = Alerter(parse_alerts({}, tmp_path), "pbx-a", Metrics(), tmp_path / "o.sqlite",
                      lambda: clock[0])
    alerter.journal = fj.journal_path(tmp_path / "cp.db")
    for n, at in enumerate((1000.0, 1010.0, 1020.0, 5000.0)):  # made while the daemon was down
        fj.append(alerter.journal, at, entry(n, number=f"0{n}"))
    raised = []
    alerter._raised = lambda alert, now: raised.append(alert)  # type: ignore[method-assign]
    await alerter.open()
    try:
        for _ in range(3):
            await alerter.round()
    finally:
        await alerter.close()
    assert [(a.kind, a.key, a.count, a.first_seen, a.last_seen) for a in raised] == [
        ("fallback_decision", "fallback", 3, 1000.0, 1020.0),
        ("fallback_decision", "fallback", 1, 5000.0, 5000.0)]
    assert raised[0].details["numbers"] == ["00", "01", "02"]
    assert raised[1].details["by"] == "fallback" and raised[1].details["uniqueid"] == "1700.3"
    assert not alerter.journal.exists() and not fj.taking_path(alerter.journal).exists()


def test_fallback_alert_after_downtime(tmp_path: Path) -> None:
    """A call decided by the fallback AGI with NO daemon running is alerted by webhook once
    `callpolicy serve` starts."""
    hook = WebhookReceiver().start()
    try:
        config, _port = configure(tmp_path, hook, _NoSmtp())
        config.write_text(config.read_text() + "[alerts.route.fallback_decision]\n"
                          'to = ["webhook:ops"]\nwindow = 0\n')
        state = State(tmp_path, config, tmp_path / "cp.db", base_env(config))
        args = ("outbound", "acme-101", b64("092101299"), "", "0", "127.0.0.2:5060", "")
        run = state.fallback(*args, env_block=agi_env_block(
            args, {"agi_uniqueid": "1764540000.77"}))
        assert assert_clean_success(run)["CP_ACTION"] == "allow"
        journal = fj.journal_path(tmp_path / "cp.db")
        assert journal.exists()
        log = tmp_path / "serve.log"
        started = time.monotonic()
        daemon = start(["serve"], config, log)
        try:
            wait_until(lambda: hook.of_kind("fallback_decision"), 15,
                       "no fallback_decision alert within 15 s of the daemon's start")
            print(f"fallback decision made while down: alerted {time.monotonic() - started:.2f}"
                  " s after `callpolicy serve` was started")
            [delivery] = hook.of_kind("fallback_decision")
            details = delivery.payload["details"]
            assert (details["by"], details["uniqueid"], details["customer"],
                    details["action"]) == ("fallback", "1764540000.77", "acme", "allow")
            assert delivery.payload["count"] == 1
            wait_until(lambda: not journal.exists()
                       and not fj.taking_path(journal).exists(), 5, "journal not taken")
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=10) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
        assert len(hook.of_kind("fallback_decision")) == 1
        assert any('"event": "alert_raised"' in line and "fallback_decision" in line
                   for line in log.read_text().splitlines())
    finally:
        hook.stop()


class _NoSmtp:
    port = 9  # discard: nothing routes fallback_decision there


def test_journal_lines_are_json(tmp_path: Path) -> None:
    line = fj.encode(time.time(), entry(1))
    assert json.loads(line)["customer"] == "acme" and line.endswith(b"\n")


def test_might_hold_says_whether_take_can_find_anything(tmp_path: Path) -> None:
    """The daemon's alert round goes to a thread for `take` only when this says so."""
    journal = tmp_path / "cp.db.fallback-journal.jsonl"
    assert not fj.might_hold(journal)
    assert fj.take(journal).entries == []  # nothing there: nothing missed by not asking
    fj.append(journal, 1.0, {"uniqueid": "1.1", "action": "allow"})
    assert fj.might_hold(journal)
    assert fj.take(journal).entries == []  # renamed to .taking, read next round
    assert fj.might_hold(journal)
    assert [e.values["uniqueid"] for e in fj.take(journal).entries] == ["1.1"]
    assert not fj.might_hold(journal)
    blocked = tmp_path / "a-file" / "journal"  # ENOTDIR: not "absent", take reports it
    (tmp_path / "a-file").write_text("")
    assert fj.might_hold(blocked)
    with pytest.raises(OSError):
        fj.take(blocked)
