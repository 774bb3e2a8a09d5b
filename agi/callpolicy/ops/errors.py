"""The errors of the operations: one root, `OpsError`, whose message is one line said to the
user as is.

`InvalidRequest` is the request itself being wrong (the CLI: bad usage, exit 2; an HTTP API:
400). Its message names the inputs it is about as `Field`s, so that each front end names them
its own way (the CLI `--older-than`, a JSON body `older_than`); `str()` gives the plain names.
Every other `OpsError` is operational (the CLI: exit 1): an unknown customer, a refused import,
or the store refusing or failing (`StoreProblem`, the store's own one-line message).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from ..store import StoreError

__all__ = [
    "Field",
    "ImportRejected",
    "InvalidRequest",
    "OpsError",
    "StoreProblem",
    "UnknownCustomer",
    "store_problems",
]


class OpsError(Exception):
    """An operation was refused or failed; the message says why, in one line."""


class UnknownCustomer(OpsError):
    def __init__(self, customer_id: str) -> None:
        super().__init__(f"unknown customer {customer_id!r}")
        self.customer_id = customer_id


class StoreProblem(OpsError):
    """The store refused the change (already suspended, nothing to settle…) or failed (cannot
    open or write the database); the message is the store's."""


class ImportRejected(OpsError):
    """The import file has problems: nothing is imported. `problems` lists them, one line
    each."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(f"nothing imported ({len(problems)} problem(s))")
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class Field:
    """An input of an operation, named in an InvalidRequest message (like `since`)."""

    name: str


class InvalidRequest(OpsError):
    """The request is wrong as given. `parts` is the message: text and the Fields it names."""

    def __init__(self, *parts: str | Field) -> None:
        self.parts = parts
        super().__init__(self.render(lambda name: name))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(part.name for part in self.parts if isinstance(part, Field))

    def render(self, name: Callable[[str], str]) -> str:
        """The message, each field named by `name` (the CLI: its option)."""
        return "".join(name(p.name) if isinstance(p, Field) else p for p in self.parts)


P = ParamSpec("P")
R = TypeVar("R")


def store_problems(operation: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """An operation whose StoreError comes out as a StoreProblem (same message, the store's
    error as its cause): callers catch one root."""
    @functools.wraps(operation)
    async def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await operation(*args, **kwargs)
        except StoreError as exc:
            raise StoreProblem(str(exc)) from exc
    return translated
