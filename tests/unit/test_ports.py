"""The tests' own port helper (tests/ports.py): numbers the kernel never hands out by
itself, distinct within a run, one block per pytest-xdist worker."""

from __future__ import annotations

import socket

import ports


def test_ports_are_below_the_ephemeral_range_distinct_and_free() -> None:
    if ports._BLOCK is None:  # a machine whose ephemeral range starts low
        return
    handed = [ports.free_port() for _ in range(50)]
    assert len(set(handed)) == 50
    assert all(p in ports._BLOCK and p < ports._ephemeral_low() for p in handed)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", handed[-1]))  # free when handed out


def test_each_xdist_worker_has_its_own_block(monkeypatch) -> None:
    monkeypatch.setattr(ports, "_ephemeral_low", lambda: 32_768)
    for count in (1, 3, 16, 100):
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(count))
        blocks = []
        for n in range(count):
            monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{n}")
            blocks.append(ports._block())
        if count == 100:  # the room shared: 127 ports each
            assert all(b is not None and len(b) == 127 for b in blocks)
        taken = [p for b in blocks if b is not None for p in b]
        assert len(taken) == len(set(taken)), count  # no two workers share a port
        assert all(ports.FIRST <= p < 32_768 for p in taken)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "200")  # 63 ports each: the kernel's
    assert ports._block() is None
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT")
    assert ports._block() == range(ports.FIRST, ports.FIRST + ports.BLOCK)  # no xdist
