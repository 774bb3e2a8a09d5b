"""The ranges every front end checks a request's values against (the CLI's options, the HTTP
API's fields), so that both accept and refuse the same things."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .errors import Field, InvalidRequest

__all__ = ["MAX_AUDIT_TEXT", "MAX_COUNT", "MAX_SPAN", "MAX_SPAN_TEXT", "audit_text",
           "within_span"]

MAX_SPAN = timedelta(days=3650)  # durations, and times from now: 10 years
MAX_SPAN_TEXT = "3650d (10 years)"
MAX_COUNT = 1_000_000  # fraud limits, and how many rows a listing returns
MAX_AUDIT_TEXT = 200  # by, ticket, reason: characters


def audit_text(value: str, field: str, what: str) -> str:
    """By, ticket or reason: non-empty printable text of at most MAX_AUDIT_TEXT characters
    (leading and trailing spaces dropped): the audit log is read on terminals and must say
    who and why."""
    text = value.strip()
    if not text:
        raise InvalidRequest(Field(field), f" is empty: give {what}")
    if not text.isprintable():
        raise InvalidRequest(Field(field), f" contains control characters (give {what} as "
                             "plain text)")
    if len(text) > MAX_AUDIT_TEXT:
        raise InvalidRequest(Field(field), f" has {len(text)} characters: at most "
                             f"{MAX_AUDIT_TEXT}")
    return text


def within_span(moment: datetime, field: str, now: datetime, *, future: bool = False
                ) -> datetime:
    """An aware time within MAX_SPAN of `now` (`future`: after now), as UTC."""
    if future and moment <= now:
        raise InvalidRequest(Field(field), f" {moment.isoformat()} is in the past")
    if abs(moment - now) > MAX_SPAN:  # aware subtraction: no overflow near year 1 or 9999
        raise InvalidRequest(Field(field), f" {moment.isoformat()} is more than "
                             f"{MAX_SPAN_TEXT} from now")
    return moment.astimezone(UTC)
