"""Issue 12: the daemon's snapshot is frozen out of the cyclic garbage collector. With 100 000
customers a full collection walked its ~1.2 million objects (~1 s, the event loop stopped)
every few tens of thousands of calls: the bench's soak saw a 1.2 s stall (SIP retransmits).
Asserted on what the collector would walk, not on time."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import run

from callpolicy.policy import CallRequest
from callpolicy.service.config import load_settings
from callpolicy.service.daemon import PolicyService
from callpolicy.service.long_lived import long_lived
from conftest import NOW

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo-customers.toml"


@pytest.fixture
def thawed() -> Iterator[None]:
    """The test process gets its collector back as it was."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def walked(obj: object) -> bool:
    """Whether a collection (of any generation, up to a full one) looks at `obj`."""
    return any(o is obj for o in gc.get_objects())


def test_the_loaded_snapshot_is_not_walked_by_the_collector(tmp_path: Path, thawed) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "cp.db"}"\n')
    assert run("customer", "import", str(DEMO), "--by", "tester",
               db=tmp_path / "cp.db").returncode == 0
    settings = load_settings(str(path))

    async def scenario() -> tuple[int, int, list[object], int, int]:
        service = PolicyService(settings, str(path), None)
        await service.load()
        try:
            assert service.engine is not None
            snapshot = service.engine.snapshot
            held = [snapshot, snapshot.customers, *snapshot.customers.values(),
                    *snapshot.endpoints.values()]
            assert all(gc.is_tracked(o) for o in held)  # objects a collection would walk
            frozen = gc.get_freeze_count()
            # per call, the caches fill as before; SIGHUP empties the replaced classifier's
            classifier = service.engine.classifier
            service.decide(CallRequest("092101299", NOW, endpoint="acme-101"))
            entries = sum(classifier.caches().values())
            service.reload_config()
            return frozen, entries, held, sum(classifier.caches().values()), \
                len(snapshot.customers)
        finally:
            assert service.store is not None
            await service.store.close()

    frozen, entries, held, left, customers = asyncio.run(scenario())
    walked_now = [o for o in held if walked(o)]
    print(f"{customers} customers: {frozen} objects frozen at load; {len(walked_now)} of "
          f"{len(held)} snapshot objects walked by the collector; caches {entries} -> {left} "
          f"after SIGHUP")
    assert customers > 0 and frozen >= len(held)
    assert walked_now == []
    assert entries > 0 and left == 0


def test_a_failed_load_freezes_nothing_and_leaves_the_collector_on(thawed) -> None:
    async def failing_load() -> None:
        assert not gc.isenabled()
        raise RuntimeError("the store failed mid-load")

    with pytest.raises(RuntimeError, match="mid-load"):
        asyncio.run(long_lived(failing_load()))
    assert gc.isenabled() and gc.get_freeze_count() == 0
