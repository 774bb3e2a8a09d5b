"""The SQLite backend (aiosqlite) of the store interface (`store.interface.StoreBackend`).

- WAL, foreign keys, `synchronous=FULL`: a change is on disk when its transaction commits, and
  the CLI reports success only after the commit.
- Every change writes an audit row (who, when, ticket, reason, before/after) in the same
  transaction; triggers make the audit table append-only.
- The daemons' Snapshot is loaded and refreshed from here by `snapshot.SnapshotSource`
  (`load_customers`, `audit_tail`: the audit log after the snapshot's high-water mark).
- Call records (`calls`, art. 4.3) are billing data, not the audit log: the daemon upserts them
  in batches (`record_calls`), and `purge_calls` deletes old ones (the purge itself is audited).

`Store` is put together from one class per concern, all over one connection (`connection`):
`transaction` (the write lock, BEGIN IMMEDIATE … COMMIT), `audit`, `customers`,
`customer_import`, `suspensions` (schedules, payment reminders), `unblocks`, `limits`,
`calls`, `snapshot_queries` and `idempotency` (the HTTP API's Idempotency-Key).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .calls import Calls
from .connection import file_identity
from .customer_import import IMPORT_BATCH_ROWS, IMPORT_PAUSE_SECONDS, CustomerImport
from .idempotency import IdempotencyKeys
from .limits import Limits
from .snapshot_queries import SnapshotQueries
from .suspensions import Suspensions
from .unblocks import Unblocks

if TYPE_CHECKING:
    from ..interface import StoreBackend

__all__ = ["IMPORT_BATCH_ROWS", "IMPORT_PAUSE_SECONDS", "Store", "file_identity"]


class Store(CustomerImport, Suspensions, Unblocks, Limits, Calls, SnapshotQueries,
            IdempotencyKeys):
    """A callpolicy database in one SQLite file: `await Store.open(path)`."""


if TYPE_CHECKING:
    _IMPLEMENTS: type[StoreBackend] = Store  # mypy checks Store against the interface
