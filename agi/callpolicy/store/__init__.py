"""The store: schema and migrations, customers, unblocks, limits, calls, snapshot loading.

Code outside this package imports from here, not from the modules inside: this is the interface
a second backend implements. `sqlite` is the one backend today; `importer` reads import files
into the records this package stores.
"""

from .sqlite import (
    LIMIT_FIELDS,
    MIGRATIONS,
    REMINDER_GRACE_DAYS,
    SCHEMA_VERSION,
    Actor,
    CustomerRecord,
    EndpointRecord,
    ImportIncomplete,
    SnapshotSource,
    Store,
    StoreError,
    StoreReplaced,
    contract_today,
    contract_zone,
    file_identity,
    iso,
    limits_dict,
    parse_iso,
    suspension_due,
)

__all__ = [
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
    "StoreError",
    "StoreReplaced",
    "contract_today",
    "contract_zone",
    "file_identity",
    "iso",
    "limits_dict",
    "parse_iso",
    "suspension_due",
]
