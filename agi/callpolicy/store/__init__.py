"""The store: schema and migrations, customers, unblocks, limits, calls, snapshot loading.

Code outside this package imports from here, not from the modules inside. `interface`
(`StoreBackend`) is what every backend provides and the contract it keeps; `sqlite/` is the
SQLite backend (`Store`, one module per concern); `postgres` the PostgreSQL one (the same Store
over asyncpg); `open_store` opens either by its location (a path, `sqlite:///…` or
`postgresql://…`, see `url`); `schema` the migrations; `model` the records, errors and time
helpers a backend shares; `snapshot` keeps the daemons' Snapshot up to date through the
interface's methods; `importer` reads import files into records.
"""

from .interface import StoreBackend
from .model import (
    IDEMPOTENCY_PENDING,
    LIMIT_FIELDS,
    REMINDER_GRACE_DAYS,
    Actor,
    CustomerRecord,
    EndpointRecord,
    ImportIncomplete,
    StoreError,
    StoreReplaced,
    contract_today,
    contract_zone,
    iso,
    limits_dict,
    parse_iso,
    suspension_due,
)
from .schema import MIGRATIONS, SCHEMA_VERSION
from .snapshot import SnapshotSource
from .sqlite import Store, file_identity
from .url import StoreLocation, StoreURLError, open_store, parse_location

__all__ = [
    "IDEMPOTENCY_PENDING",
    "LIMIT_FIELDS",
    "MIGRATIONS",
    "REMINDER_GRACE_DAYS",
    "SCHEMA_VERSION",
    "Actor",
    "CustomerRecord",
    "EndpointRecord",
    "ImportIncomplete",
    "SnapshotSource",
    "Store",
    "StoreBackend",
    "StoreError",
    "StoreLocation",
    "StoreReplaced",
    "StoreURLError",
    "contract_today",
    "contract_zone",
    "file_identity",
    "iso",
    "limits_dict",
    "open_store",
    "parse_iso",
    "parse_location",
    "suspension_due",
]
