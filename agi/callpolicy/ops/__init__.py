"""The operations ops perform, for every front end (the CLI today, an HTTP API next).

Each operation takes plain typed values (a customer id, an UnblockTarget, a timedelta, an
Actor) and an open Store, validates them, has the store make the change (which writes the
audit row and commits) and returns a value; it never prints or exits. Request values validate
when they are made (`UnblockTarget.parse`, `LimitChange.of`, `Period`, `Caller`, `plan_purge`,
`plan_import`), so a front end can refuse a bad request before it opens the database.
Every error is an `OpsError` (see `errors`).

Modules: `session` (open_store), `customers`, `unblocks`, `limits`, `calls`, `audit`, `check`.
"""

from ..store import Actor
from .errors import (
    Field,
    ImportRejected,
    InvalidRequest,
    OpsError,
    StoreProblem,
    UnknownCustomer,
)
from .session import open_store, require_customer

__all__ = [
    "Actor",
    "Field",
    "ImportRejected",
    "InvalidRequest",
    "OpsError",
    "StoreProblem",
    "UnknownCustomer",
    "open_store",
    "require_customer",
]
