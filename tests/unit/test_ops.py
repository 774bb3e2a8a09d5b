"""The operations (callpolicy.ops) called directly, as an HTTP API will: typed values in, a
value or an OpsError out, the change audited and committed by the store. No CLI here."""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from callpolicy import ops
from callpolicy.cli.args import option_name
from callpolicy.ops import customers, unblocks
from callpolicy.ops.audit import audit_log
from callpolicy.ops.calls import Period, iter_calls, plan_purge
from callpolicy.ops.check import Caller, prepare_check
from callpolicy.ops.limits import LimitChange, set_limits, show_limits
from callpolicy.policy import Action, FraudLimits, UnblockKind, build_policy_config
from callpolicy.service.config import Settings, load_zones
from callpolicy.store import Actor, Store, StoreError

CONFIG = build_policy_config()
ALICE = Actor("alice", "T-1", "test")
BOB = Actor("bob", "T-42", "unpaid invoice")


@pytest.fixture
def settings(tmp_path: Path, repo: Path) -> Settings:
    zones = load_zones(repo / "agi" / "callpolicy" / "data" / "telephone-zones.toml")
    return Settings(path=None, db_path=tmp_path / "cp.db", policy=CONFIG, zones=zones)


@pytest.fixture
async def store(settings: Settings, demo_customers: Path) -> Store:
    plan = customers.plan_import(demo_customers, settings.zones)
    async with await ops.open_store(settings, create=True) as store:
        await customers.import_customers(store, plan, ALICE)
        yield store


async def audit_count(store: Store) -> int:
    return len(await audit_log(store, None, 10_000))


# --- errors: one root, messages as the CLI shows them --------------------------------------

@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [(UnblockKind.COUNTRY, "fr", "--country FR is in the EU: calls there are not blocked"),
     (UnblockKind.COUNTRY, "XX", "--country 'XX' is not an ISO 3166 country code"),
     (UnblockKind.CATEGORY, "mobile", "--category must be one of premium, non_eu"),
     (UnblockKind.PREFIX, "abc",
      "--prefix 'abc' is not a number prefix (national like 0905, or +41…)")])
async def test_an_unblock_of_a_target_that_is_not_blocked_is_refused_and_writes_nothing(
        store: Store, kind: UnblockKind, text: str, message: str) -> None:
    before = await audit_count(store)
    with pytest.raises(ops.InvalidRequest) as caught:
        target = unblocks.UnblockTarget.parse(kind, text, CONFIG.premium_prefixes)
        await unblocks.unblock(store, "acme", target, ALICE)
    assert isinstance(caught.value, ops.OpsError)
    assert caught.value.render(option_name) == message  # what the CLI prints
    assert caught.value.fields == (kind.value,)
    assert str(caught.value) == message.removeprefix("--")  # plain field names
    assert await audit_count(store) == before


def test_a_premium_prefix_too_short_to_open_anything_is_accepted_with_a_warning() -> None:
    target = unblocks.UnblockTarget.parse(UnblockKind.PREFIX, "090", CONFIG.premium_prefixes)
    assert (target.value, target.shown) == ("+3290", "090")
    assert "opens none of them" in target.warnings[0]
    assert unblocks.UnblockTarget.parse(
        UnblockKind.PREFIX, "0905", CONFIG.premium_prefixes).warnings == ()


@pytest.mark.parametrize(
    "operation",
    [lambda s: customers.show(s, "ghost"),
     lambda s: customers.suspend(s, "ghost", BOB),
     lambda s: customers.schedule_suspension(
         s, "ghost", datetime.now(UTC) + timedelta(days=3), BOB),
     lambda s: customers.record_reminder(s, "ghost", date(2026, 1, 1), BOB),
     lambda s: customers.record_payment(s, "ghost", BOB),
     lambda s: customers.reactivate(s, "ghost", BOB),
     lambda s: unblocks.unblock(s, "ghost", unblocks.UnblockTarget(
         UnblockKind.CATEGORY, "premium"), BOB, lasting=timedelta(hours=1)),
     lambda s: unblocks.reblock(s, "ghost", unblocks.UnblockTarget(
         UnblockKind.CATEGORY, "premium"), BOB),
     lambda s: unblocks.list_unblocks(s, "ghost"),
     lambda s: show_limits(s, "ghost", FraudLimits()),
     lambda s: set_limits(s, "ghost", LimitChange.of({"max_concurrent": 2}), BOB,
                          FraudLimits()),
     lambda s: audit_log(s, "ghost", 10),
     lambda s: iter_calls(s, "ghost", Period())],
    ids=["show", "suspend", "schedule", "remind", "paid", "reactivate", "unblock", "reblock",
         "unblocks", "limits show", "limits set", "audit", "calls"])
async def test_unknown_customer_is_UnknownCustomer_and_writes_nothing(store: Store,
                                                                      operation) -> None:
    before = await audit_count(store)
    with pytest.raises(ops.UnknownCustomer, match=r"^unknown customer 'ghost'$") as caught:
        await operation(store)
    assert caught.value.customer_id == "ghost"
    assert await audit_count(store) == before


async def test_a_refusal_of_the_store_is_a_StoreProblem_with_its_message(store: Store) -> None:
    with pytest.raises(ops.StoreProblem,
                       match=r"^customer 'bakkerij' is already suspended$") as caught:
        await customers.suspend(store, "bakkerij", BOB)
    assert isinstance(caught.value.__cause__, StoreError)


async def test_a_missing_database_is_a_StoreProblem_and_not_created(settings: Settings) -> None:
    with pytest.raises(ops.OpsError, match="does not exist"):
        await ops.open_store(settings, readonly=True)
    with pytest.raises(ops.StoreProblem, match="does not exist"):
        await ops.open_store(settings)
    assert not settings.db_path.exists()


# --- changes: audited with the actor, committed --------------------------------------------

async def test_suspend_writes_an_audit_row_with_the_actor_and_commits(
        store: Store, settings: Settings) -> None:
    await customers.suspend(store, "acme", BOB)
    async with await ops.open_store(settings, readonly=True) as reader:  # another connection
        last = (await audit_log(reader, "acme", 1))[0]
        shown = await customers.show(reader, "acme")
    assert (last["action"], last["actor"], last["ticket"], last["reason"]) == (
        "customer.suspend", "bob", "T-42", "unpaid invoice")
    assert shown["status"] == "suspended"
    assert shown["suspension"]["suspended_by"] == "bob"


async def test_a_reminder_long_past_suspends_at_once(store: Store) -> None:
    reminder = await customers.record_reminder(store, "acme", date(2020, 1, 1), BOB)
    assert (reminder.due_now, reminder.not_applied) == (True, None)
    assert (await customers.show(store, "acme"))["status"] == "suspended"
    settled = await customers.record_payment(store, "acme", BOB)
    assert settled.reactivated


async def test_unblock_for_a_duration_and_reblock(store: Store) -> None:
    target = unblocks.UnblockTarget.parse(UnblockKind.COUNTRY, "ch", CONFIG.premium_prefixes)
    done = await unblocks.unblock(store, "acme", target, BOB, lasting=timedelta(hours=2))
    assert done.expires_at is not None
    assert timedelta(hours=1, minutes=59) < done.expires_at - datetime.now(UTC) <= timedelta(
        hours=2)
    rows = await unblocks.list_unblocks(store, "acme")
    assert [(r["id"], r["kind"], r["value"]) for r in rows] == [(done.id, "country", "CH")]
    assert await unblocks.reblock(store, "acme", target, BOB) == [done.id]
    assert await unblocks.list_unblocks(store, "acme") == []
    with pytest.raises(ops.InvalidRequest):
        await unblocks.unblock(store, "acme", target, BOB, expires_at=done.expires_at,
                               lasting=timedelta(hours=1))


async def test_limits_set_and_back_to_the_default(store: Store) -> None:
    defaults = FraudLimits(max_concurrent=4, max_per_minute=10, max_concurrent_risky=1)
    done = await set_limits(store, "acme", LimitChange.of({"max_concurrent": 2}), BOB, defaults)
    assert done.changed
    assert done.view["effective"]["max_concurrent"] == 2
    assert done.view["source"]["max_concurrent"] == "customer"
    again = await set_limits(store, "acme", LimitChange.of({"max_concurrent": 2}), BOB, defaults)
    assert not again.changed
    back = await set_limits(store, "acme", LimitChange.of({}, ["max_concurrent"]), BOB, defaults)
    assert back.view["source"]["max_concurrent"] == "default"
    assert (await show_limits(store, "acme", defaults)) == back.view
    actions = [r["action"] for r in await audit_log(store, "acme", 2)]
    assert actions == ["limits.set", "limits.set"]


@pytest.mark.parametrize(
    ("values", "to_default", "message"),
    [({}, [], "nothing to change: give --max-concurrent, --max-per-minute, "
              "--max-concurrent-risky or --default FIELD"),
     ({"max_concurrent": 2}, ["max_concurrent"],
      "--max-concurrent and --default max_concurrent contradict each other"),
     ({"max_calls": 2}, [], "'max_calls' is not a limit (one of max_concurrent, "
                            "max_per_minute, max_concurrent_risky)")])
def test_a_limit_change_is_checked_when_made(values, to_default, message) -> None:
    with pytest.raises(ops.InvalidRequest) as caught:
        LimitChange.of(values, to_default)
    assert caught.value.render(option_name) == message


# --- reads ----------------------------------------------------------------------------------

def test_a_period_ends_after_it_starts_and_a_purge_says_when_it_cuts_into_retention() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ops.InvalidRequest) as caught:
        Period(now, now)
    assert caught.value.render(option_name) == "--since must be before --until"
    assert str(caught.value) == "since must be before until"
    assert plan_purge(None, 180).age == timedelta(days=180)
    assert not plan_purge(None, 180).within_retention
    assert plan_purge(timedelta(days=30), 180).within_retention


async def test_a_stream_of_calls_checks_the_customer_first(store: Store) -> None:
    stream = await iter_calls(store, "acme", Period())
    async with contextlib.aclosing(stream):
        assert [record async for record in stream] == []


async def test_check_decides_like_a_live_call_and_warns_about_an_unknown_caller(
        store: Store) -> None:
    with pytest.raises(ops.InvalidRequest) as caught:
        Caller()
    assert caught.value.fields == ("customer", "endpoint")
    check = await prepare_check(store, Caller("acme"), CONFIG)
    now = datetime.now(UTC)
    assert check.warnings == ()
    assert check.decide("090512345", now).action is Action.BLOCK
    assert check.decide("092101235", now).action is Action.ALLOW
    unknown = await prepare_check(store, Caller(endpoint="ghost-1"), CONFIG)
    assert unknown.warnings == ("endpoint 'ghost-1' (no customer has it) is unknown: decided "
                                "as a live call from it would be (refused; must-reach numbers "
                                "pass)",)
    assert unknown.decide("092101235", now).action is Action.BLOCK
    assert unknown.decide("112", now).action is not Action.BLOCK


async def test_an_import_with_problems_is_rejected_whole(
        settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[customer]]\nid = "x"\n')
    plan = customers.plan_import(bad, settings.zones)
    with pytest.raises(ops.ImportRejected) as caught:
        customers.check_import(plan)
    assert caught.value.problems == tuple(plan.errors)
    assert len(plan.errors) > 1
    assert str(caught.value) == f"nothing imported ({len(plan.errors)} problem(s))"
    async with await ops.open_store(settings, create=True) as store:
        with pytest.raises(ops.ImportRejected):
            await customers.import_customers(store, plan, ALICE)
        assert await customers.customers(store) == []
