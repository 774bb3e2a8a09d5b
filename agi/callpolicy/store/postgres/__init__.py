"""The PostgreSQL backend (asyncpg): the Store's operations on a shared database."""

from .store import PostgresStore

__all__ = ["PostgresStore"]
