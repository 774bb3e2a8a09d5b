"""Issue 12: the decision caches are bounded by `[policy] cache_entries`. Every key is a
string a caller chose, so a flood of distinct numbers must only evict: the daemon's memory
stays flat however long it runs."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cli_runner import one_error_line, run

from callpolicy.policy import Action, CallRequest, PolicyConfig, Unblock, UnblockKind
from callpolicy.policy.model import DEFAULT_CACHE_ENTRIES
from callpolicy.service.config import ConfigError, load_settings
from callpolicy.service.daemon import PolicyService
from conftest import NOW, EngineFactory, make_customer

BOUND = 64
# what callers dial: national, mobile, EU and non-EU (shared +1: the region cache), premium,
# invalid, and the #31# prefix
KINDS = ("09{:07d}", "047{:07d}", "+3314{:07d}", "+1415{:07d}", "0905{:05d}", "x{:05d}",
         "#31#02{:07d}")


def dialled(n: int) -> str:
    return KINDS[n % len(KINDS)].format(n // len(KINDS))


def test_a_flood_of_distinct_numbers_never_grows_the_caches_past_the_bound(
        make_engine: EngineFactory, config: PolicyConfig) -> None:
    # a country unblock for a +1 region: the engine asks libphonenumber (its region cache)
    customer = make_customer(unblocks=[Unblock(1, UnblockKind.COUNTRY, "CA",
                                               expires_at=NOW + timedelta(days=1))])
    engine = make_engine(customer, config=replace(config, cache_entries=BOUND))
    peak = dict.fromkeys(engine.classifier.caches(), 0)
    for n in range(20 * BOUND):
        decision = engine.decide(CallRequest(dialled(n), NOW, customer_id=customer.id,
                                             caller_id=f"+3292{n:07d}"))
        assert decision.action in (Action.ALLOW, Action.BLOCK)
        for name, size in engine.classifier.caches().items():
            peak[name] = max(peak[name], size)
    print(f"cache sizes after {20 * BOUND} distinct numbers: {peak} (bound {BOUND})")
    assert peak == dict.fromkeys(peak, BOUND)  # each filled, none past the bound


def test_a_repeated_number_is_a_cache_hit(make_engine: EngineFactory,
                                          config: PolicyConfig) -> None:
    engine = make_engine(config=replace(config, cache_entries=BOUND))
    for _ in range(3):
        engine.decide(CallRequest("09 210 12 34", NOW, customer_id="acme"))
    assert engine.classifier.classify.cache_info().hits == 2


def test_zero_entries_caches_nothing_and_still_decides(make_engine: EngineFactory,
                                                       config: PolicyConfig) -> None:
    engine = make_engine(config=replace(config, cache_entries=0))
    assert engine.decide(CallRequest("0905 12 345", NOW, customer_id="acme")).action \
        is Action.BLOCK
    assert engine.decide(CallRequest("112", NOW, customer_id="acme")).action is Action.ALLOW
    assert set(engine.classifier.caches().values()) == {0}


def test_the_config_sizes_the_caches(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[policy]\ncache_entries = 100\n")
    assert load_settings(str(path)).policy.cache_entries == 100
    path.write_text("[policy]\n")
    assert load_settings(str(path)).policy.cache_entries == DEFAULT_CACHE_ENTRIES == 4096


@pytest.mark.parametrize("value", ["-1", "1000001", '"4096"', "true", "40.5"])
def test_a_bad_cache_size_is_a_one_line_error_naming_the_key(tmp_path: Path,
                                                             value: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[policy]\ncache_entries = {value}\n")
    with pytest.raises(ConfigError, match=r"policy\.cache_entries must be"):
        load_settings(str(path))
    one_error_line(run("--config", str(path), "customer", "list"), 2, "policy.cache_entries")


def test_the_daemon_decides_through_one_set_of_bounded_caches(tmp_path: Path) -> None:
    """The daemon's per-call path (PolicyService.decide) and its fail-safe answers share the
    classifier, sized by the config."""
    path = tmp_path / "c.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "cp.db"}"\n[policy]\ncache_entries = {BOUND}\n')
    demo = Path(__file__).resolve().parents[2] / "config" / "demo-customers.toml"
    assert run("customer", "import", str(demo), "--by", "tester",
               db=tmp_path / "cp.db").returncode == 0
    settings = load_settings(str(path))

    async def scenario() -> dict[str, int]:
        service = PolicyService(settings, str(path), None)
        await service.load()
        try:
            assert service.engine is not None
            for n in range(10 * BOUND):
                request = CallRequest(dialled(n), NOW, endpoint="acme-101",
                                      caller_id=f"+3292{n:07d}")
                service.decide(request)
                service.fail_safe(request, "test")
            return service.engine.classifier.caches()
        finally:
            assert service.store is not None
            await service.store.close()

    sizes = asyncio.run(scenario())
    print(f"daemon cache sizes after {10 * BOUND} distinct calls: {sizes}")
    assert sizes["normalise"] == sizes["number"] == sizes["classify"] == BOUND
