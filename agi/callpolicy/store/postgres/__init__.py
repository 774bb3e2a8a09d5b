"""The PostgreSQL backend (asyncpg): the Store's operations on a shared database."""

from .store import PostgresStore, redacted

__all__ = ["PostgresStore", "redacted"]
