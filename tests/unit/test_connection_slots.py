"""The eviction policy shared by the FastAGI and HTTP servers."""

from __future__ import annotations

import pytest

from callpolicy.service.connection_slots import ConnectionSlots


def test_when_full_the_oldest_unsettled_connection_makes_room() -> None:
    closed: list[str] = []
    slots = ConnectionSlots(3)
    a, b, c = (slots.admit(lambda n=n: closed.append(n)).slot for n in "abc")
    assert a and b and c and len(slots) == 3
    slots.settle(a)  # a sent its request: never evicted
    admitted = slots.admit(lambda: closed.append("d"))
    assert admitted.slot is not None and admitted.evicted is b
    assert closed == ["b"] and b.evicted and not a.evicted
    assert len(slots) == 3 and slots.waiting == 2  # c and d
    assert slots.admit(lambda: closed.append("e")).evicted is c  # then the next oldest


def test_when_every_slot_is_answering_the_newcomer_is_refused() -> None:
    closed: list[str] = []
    slots = ConnectionSlots(2)
    for _ in range(2):
        slot = slots.admit(lambda: closed.append("x")).slot
        assert slot is not None
        slots.settle(slot)
    refused = slots.admit(lambda: closed.append("new"))
    assert refused.slot is None and refused.evicted is None and closed == []
    assert len(slots) == 2


def test_release_frees_the_slot_and_is_idempotent() -> None:
    slots = ConnectionSlots(1)
    first = slots.admit(lambda: None).slot
    assert first is not None
    slots.release(first)
    slots.release(first)
    second = slots.admit(lambda: None)
    assert second.slot is not None and second.evicted is None and len(slots) == 1


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ConnectionSlots(0)
