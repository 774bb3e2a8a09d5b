"""A big import is written in batches (issue 10): what that keeps and what it says when a
later batch fails."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from backends import is_postgresql, query, script
from cli_runner import run
from test_import_bounds import customers_file

from callpolicy.policy import Address
from callpolicy.service.config import load_zones
from callpolicy.store import (
    Actor,
    CustomerRecord,
    EndpointRecord,
    ImportIncomplete,
    Store,
    StoreError,
    open_store,
)
from callpolicy.store.import_file import read_import_file
from callpolicy.store.sqlite import customer_import

ALICE = Actor("alice", "T-1", "test")
ADDRESS = Address("Breebroekstraat", "61", "9030", "Gent", "BE")


def customer(cid: str, *numbers: str, endpoint: str | None = None) -> CustomerRecord:
    endpoints = (EndpointRecord(endpoint, None),) if endpoint else ()
    return CustomerRecord(cid, cid.upper(), "active", numbers[0], numbers, ADDRESS,
                          endpoints=endpoints)


async def refuse_customer(db: object, cid: str) -> None:
    """The database refuses one customer (as a full disk would refuse a transaction)."""
    if not is_postgresql(db):
        await query(db, f"CREATE TRIGGER refuse BEFORE INSERT ON customers WHEN NEW.id = '{cid}' "
                    "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
        return
    await script(str(db), f"""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
            IF NEW.id = '{cid}' THEN RAISE EXCEPTION 'database or disk is full'; END IF;
            RETURN NEW; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION refuse();
        """)


async def allow_all(db: object) -> None:
    await query(db, "DROP TRIGGER refuse" + (" ON customers" if is_postgresql(db) else ""))


@pytest.fixture
async def store(db_location: str) -> Store:
    store = await open_store(db_location, create=True)
    yield store
    await store.close()


async def test_a_failing_later_batch_names_what_is_written(store: Store) -> None:
    records = [customer(f"c{n}", f"+329210{n:04d}") for n in range(10)]
    await refuse_customer(store.path, "c6")
    with pytest.raises(ImportIncomplete) as caught:
        await store.import_customers(records, ALICE, batch_rows=6)  # 3 customers a batch
    assert caught.value.written == ["c0", "c1", "c2", "c3", "c4", "c5"]
    assert caught.value.not_written == ["c6", "c7", "c8", "c9"]
    message = str(caught.value)
    assert "database or disk is full" in message
    assert "written and audited: customers #1-#6 (c0, c1, c2, c3, c4, c5)" in message
    assert "NOT written: customers #7-#10 (c6, c7, c8, c9)" in message
    assert [c["id"] for c in await store.customers()] == caught.value.written
    audited = [e["customer_id"] for e in await store.audit_log(limit=100)]
    assert audited == caught.value.written

    await allow_all(store.path)
    result = await store.import_customers(records, ALICE, batch_rows=6)
    assert result.unchanged == caught.value.written
    assert result.created == caught.value.not_written


async def test_a_failing_first_batch_writes_nothing(store: Store) -> None:
    records = [customer(f"c{n}", f"+329210{n:04d}") for n in range(4)]
    await refuse_customer(store.path, "c3")
    with pytest.raises(StoreError, match=r"^nothing imported: database or disk is full$"):
        await store.import_customers(records, ALICE)
    assert await store.customers() == []
    assert await store.audit_log() == []


async def test_numbers_and_endpoints_can_move_across_batch_boundaries(store: Store) -> None:
    """A customer taking a number from one later in the file is written with it in one
    transaction; a swap too. Tiny batches: one customer each otherwise."""
    await store.import_customers([customer("a", "+3292100001", "+3292100002", endpoint="ep-a"),
                                  customer("b", "+3292100003"),
                                  customer("c", "+3292100004", "+3292100005")], ALICE)
    moved = [customer("b", "+3292100003", "+3292100001", endpoint="ep-a"),  # from a (later)
             customer("c", "+3292100004", "+3292100006"),
             customer("a", "+3292100002", "+3292100005")]  # from c (earlier)
    result = await store.import_customers(moved, ALICE, batch_rows=1)
    assert result.updated == ["b", "c", "a"]
    assert (await store.customer("a"))["numbers"] == ["+3292100002", "+3292100005"]
    assert (await store.customer("b"))["numbers"] == ["+3292100001", "+3292100003"]
    assert (await store.customer("b"))["endpoints"] == [{"name": "ep-a", "number": None}]
    swap = [customer("a", "+3292100001", "+3292100005"),
            customer("b", "+3292100002", "+3292100003")]
    assert (await store.import_customers(swap, ALICE, batch_rows=1)).updated == ["a", "b"]
    assert (await store.customer("a"))["numbers"] == ["+3292100001", "+3292100005"]


async def test_a_conflict_anywhere_in_the_file_writes_nothing(store: Store) -> None:
    await store.import_customers([customer("owner", "+3292100001")], ALICE)
    records = [customer(f"c{n}", f"+329210{n + 10:04d}") for n in range(20)]
    records.append(customer("thief", "+3292100001"))
    with pytest.raises(StoreError, match="thief: number \\+3292100001 belongs to customer "
                                        "'owner'; nothing imported"):
        await store.import_customers(records, ALICE, batch_rows=2)
    assert [c["id"] for c in await store.customers()] == ["owner"]


async def test_audit_images_are_what_customer_shows(store: Store, tmp_path: Path) -> None:
    """The import writes audit images made from the file, not read back: they must be equal to
    what `customer show` reads."""
    path = Path(__file__).resolve().parents[2] / "config" / "demo-customers.toml"
    plan = read_import_file(path, load_zones())
    await store.import_customers(plan.records, ALICE)
    for entry in await store.audit_log():
        assert entry["after"] == await store.customer(entry["customer_id"])


def test_cli_exits_1_naming_written_and_unwritten_customers(tmp_path: Path) -> None:
    db = tmp_path / "cp.db"
    assert run("customer", "import", str(customers_file(tmp_path / "one.toml", 1)),
               db=db).returncode == 0
    asyncio.run(refuse_customer(db, "c-9000"))
    result = run("customer", "import", str(customers_file(tmp_path / "many.toml", 10_000)),
                 db=db)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("callpolicy: error: import stopped: database or disk is full; "
                           "written and audited: customers #1-#"), line
    assert "NOT written: customers #" in line and "… c-9999)" in line
    assert "import the same file again to finish" in line


async def test_a_number_taken_meanwhile_stops_the_import_where_it_is(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer gives a number of the file to its own customer while the import pauses
    between batches: the batch with that number is refused, the earlier ones stay."""
    # pauses long enough for the other writer's commit on a loaded host (0.1 s in production)
    monkeypatch.setattr(customer_import, "IMPORT_PAUSE_SECONDS", 0.5)
    records = [customer(f"c{n}", f"+329210{n:04d}") for n in range(10)]
    other = await open_store(store.path)
    try:
        importing = asyncio.create_task(store.import_customers(records, ALICE, batch_rows=2))
        deadline = asyncio.get_running_loop().time() + 10
        while await other.audit_high_water() == 0:  # the first batch is committed
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.005)
        await other.import_customers([customer("thief", "+3292100009")], ALICE)
        with pytest.raises(ImportIncomplete) as caught:
            await importing
    finally:
        await other.close()
    assert "c9: number +3292100009 now belongs to customer 'thief' (changed during the " \
           "import)" in str(caught.value)
    assert caught.value.not_written[-1] == "c9" and "c0" in caught.value.written
    assert (await store.customer("thief"))["numbers"] == ["+3292100009"]
