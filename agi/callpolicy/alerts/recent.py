"""The event alerts of the last hour, with their counts: the `open` list of /status."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .kinds import EVENT_KINDS, Alert

RECENT = 3600.0  # s: event alerts listed in the status
RECENT_MAX = 1000  # (kind, key) entries in that list


class RecentAlerts:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], dict[str, Any]] = {}  # the newest last

    def remember(self, alert: Alert, payload: dict[str, Any], now: float) -> None:
        if alert.kind not in EVENT_KINDS:
            return
        entry = self._entries.pop((alert.kind, alert.key), None)
        if entry is None or _epoch(entry["last_seen"]) < now - RECENT:
            entry = {"kind": alert.kind, "key": alert.key, "count": 0, "alerts": 0,
                     "first_seen": payload["first_seen"]}
        entry.update(count=entry["count"] + alert.count, alerts=entry["alerts"] + 1,
                     last_seen=payload["last_seen"], severity=alert.severity,
                     summary=payload["summary"])
        self._entries[(alert.kind, alert.key)] = entry
        while len(self._entries) > RECENT_MAX:
            self._entries.pop(next(iter(self._entries)))

    def listed(self, now: float) -> list[dict[str, Any]]:
        """Those seen within RECENT, oldest first."""
        return [dict(e) for e in self._entries.values()
                if _epoch(e["last_seen"]) >= now - RECENT]


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


__all__ = ["RecentAlerts"]
