"""The tests' own port helper (tests/ports.py): numbers the kernel never hands out by
itself, distinct within a run, one block per pytest-xdist worker."""

from __future__ import annotations

import socket

import ports


def test_ports_are_below_the_ephemeral_range_distinct_and_free() -> None:
    if ports._BLOCK is None:  # a machine whose ephemeral range starts low
        assert ports._ephemeral_low() < ports.FIRST + (ports._worker() + 1) * ports.BLOCK
        return
    handed = [ports.free_port() for _ in range(50)]
    assert len(set(handed)) == 50
    assert all(p in ports._BLOCK and p < ports._ephemeral_low() for p in handed)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", handed[-1]))  # free when handed out


def test_each_xdist_worker_has_its_own_block(monkeypatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    first = ports._block()
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2")
    third = ports._block()
    if first is not None and third is not None:
        assert not set(first) & set(third)
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert ports._block() == first  # no xdist: the first block
