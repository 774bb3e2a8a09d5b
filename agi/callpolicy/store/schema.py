"""The database schema: its migrations, in order (the schema version is their count)."""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema
    """
    CREATE TABLE customers (
        id TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
        name TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
        main_number TEXT NOT NULL,
        street TEXT NOT NULL,
        house_number TEXT NOT NULL,
        postcode TEXT NOT NULL,
        municipality TEXT NOT NULL,
        country TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE numbers (
        number TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE
    );
    CREATE INDEX numbers_by_customer ON numbers(customer_id);
    CREATE TABLE endpoints (
        name TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
        number TEXT
    );
    CREATE INDEX endpoints_by_customer ON endpoints(customer_id);
    CREATE TABLE site_networks (
        customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
        cidr TEXT NOT NULL,
        PRIMARY KEY (customer_id, cidr)
    );
    CREATE TABLE forward_targets (
        customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
        number TEXT NOT NULL,
        PRIMARY KEY (customer_id, number)
    );
    CREATE TABLE unblocks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        customer_id TEXT NOT NULL REFERENCES customers(id),
        kind TEXT NOT NULL CHECK (kind IN ('prefix', 'country', 'category')),
        value TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        ticket TEXT NOT NULL,
        reason TEXT,
        expires_at TEXT,
        revoked_at TEXT,
        revoked_by TEXT,
        revoked_ticket TEXT
    );
    CREATE INDEX unblocks_by_customer ON unblocks(customer_id);
    CREATE TABLE suspensions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        customer_id TEXT NOT NULL REFERENCES customers(id),
        suspended_at TEXT NOT NULL,
        suspended_by TEXT NOT NULL,
        ticket TEXT NOT NULL,
        reason TEXT,
        lifted_at TEXT,
        lifted_by TEXT,
        lifted_ticket TEXT
    );
    CREATE INDEX suspensions_by_customer ON suspensions(customer_id);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        ticket TEXT,
        reason TEXT,
        action TEXT NOT NULL,
        customer_id TEXT,
        before TEXT,
        after TEXT
    );
    CREATE INDEX audit_by_customer ON audit(customer_id, id);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    """,
    # 2: per-customer fraud limits (NULL = the operator default) and call records (art. 4.3).
    # `calls` has no foreign key: a call of an unknown customer is recorded too, and a record
    # must never be lost to a constraint. Timestamps: UTC ISO 8601 with microseconds.
    """
    CREATE TABLE fraud_limits (
        customer_id TEXT PRIMARY KEY REFERENCES customers(id),
        max_concurrent INTEGER CHECK (max_concurrent >= 0),
        max_per_minute INTEGER CHECK (max_per_minute >= 0),
        max_concurrent_risky INTEGER CHECK (max_concurrent_risky >= 0),
        updated_at TEXT NOT NULL
    );
    CREATE TABLE calls (
        uniqueid TEXT PRIMARY KEY,
        linkedid TEXT,
        customer_id TEXT,
        endpoint TEXT,
        dialled TEXT,
        destination TEXT,
        category TEXT,
        action TEXT,
        reason TEXT,
        rule TEXT,
        source TEXT,
        started_at TEXT,
        answered_at TEXT,
        ended_at TEXT,
        hangup_cause INTEGER,
        billable_seconds INTEGER NOT NULL DEFAULT 0 CHECK (billable_seconds >= 0)
    );
    CREATE INDEX calls_by_customer ON calls(customer_id, started_at);
    CREATE INDEX calls_by_start ON calls(started_at);
    """,
    # 3: scheduled suspensions and payment reminders (art. 5.7).
    # A reminder episode is the customer's reminders with closed_at NULL (a payment closes
    # it). At most one pending schedule per customer; due_at is UTC ISO 8601 (as iso()).
    """
    CREATE TABLE payment_reminders (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        customer_id TEXT NOT NULL REFERENCES customers(id),
        sent_on TEXT NOT NULL CHECK (sent_on GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
        recorded_at TEXT NOT NULL,
        recorded_by TEXT NOT NULL,
        ticket TEXT NOT NULL,
        closed_at TEXT,
        closed_by TEXT,
        closed_ticket TEXT
    );
    CREATE INDEX payment_reminders_by_customer ON payment_reminders(customer_id, id);
    CREATE TABLE scheduled_suspensions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        customer_id TEXT NOT NULL REFERENCES customers(id),
        due_at TEXT NOT NULL,
        reminder_id INTEGER REFERENCES payment_reminders(id),
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        ticket TEXT NOT NULL,
        reason TEXT,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'applied', 'cancelled')),
        closed_at TEXT,
        closed_by TEXT,
        closed_ticket TEXT
    );
    CREATE UNIQUE INDEX scheduled_suspensions_one_pending ON scheduled_suspensions(customer_id)
        WHERE state = 'pending';
    CREATE INDEX scheduled_suspensions_due ON scheduled_suspensions(due_at)
        WHERE state = 'pending';
    """,
    # 4: free calls (BIPT: emergency services, must-reach and 0800 numbers are never billed)
    # keep their real duration in duration_seconds and bill 0. Existing rows: the duration is
    # what was billed, and free is policy.free_call as of this migration.
    """
    ALTER TABLE calls ADD COLUMN free INTEGER NOT NULL DEFAULT 0 CHECK (free IN (0, 1));
    ALTER TABLE calls ADD COLUMN duration_seconds INTEGER NOT NULL DEFAULT 0
        CHECK (duration_seconds >= 0);
    UPDATE calls SET duration_seconds = billable_seconds;
    UPDATE calls SET free = 1
        WHERE category IN ('emergency', 'must_reach') OR destination LIKE '+32800%';
    UPDATE calls SET billable_seconds = 0 WHERE free = 1;
    """,
    # 5: PostgreSQL only (a trigger that announces every committed change to the daemons,
    # store/postgres/schema.py); nothing on SQLite, whose daemon polls.
    "",
    # 6: the node (`[cluster] node`) that decided each call. The cluster's live-call and
    # node tables are PostgreSQL only (store/postgres/schema.py): SQLite is one node.
    """
    ALTER TABLE calls ADD COLUMN node TEXT;
    """,
    # 7: the HTTP API's Idempotency-Key (api/idempotency.py): a write's response, kept per
    # (token name, key) until it expires, so that a retried request is answered again
    # without being done again. Not policy data: not audited, not in TABLES (not copied).
    """
    CREATE TABLE idempotency_keys (
        owner TEXT NOT NULL,
        key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        status INTEGER NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        PRIMARY KEY (owner, key)
    );
    CREATE INDEX idempotency_keys_expiry ON idempotency_keys(expires_at);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
TABLES = ("customers", "numbers", "endpoints", "site_networks", "forward_targets", "unblocks",
          "suspensions", "audit", "fraud_limits", "calls", "payment_reminders",
          "scheduled_suspensions")


def statements(script: str) -> list[str]:
    """Split a migration into statements (triggers contain ';' inside BEGIN … END)."""
    found, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if text.endswith(";") and sqlite3.complete_statement(text):
            found.append(text)
            current = []
    if "\n".join(current).strip():
        found.append("\n".join(current))
    return found
