"""The webhook signature: HMAC-SHA256 over "<timestamp>.<body>" with the channel's secret.

Headers: `X-Callpolicy-Timestamp: <unix seconds>` and
`X-Callpolicy-Signature: sha256=<hex>`. A receiver recomputes the HMAC over the timestamp
header, a dot and the raw body, compares in constant time, and refuses a timestamp more than
MAX_SKEW s away from its clock (a replayed old delivery)."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Callpolicy-Signature"
TIMESTAMP_HEADER = "X-Callpolicy-Timestamp"
ALERT_ID_HEADER = "X-Callpolicy-Alert-Id"
MAX_SKEW = 300  # s


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def headers(secret: bytes, timestamp: int, body: bytes) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify(secret: bytes, timestamp: str, signature: str, body: bytes, now: float,
           max_skew: float = MAX_SKEW) -> bool:
    """What a receiver does (and the tests): True if `signature` is valid and fresh."""
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    if abs(now - stamp) > max_skew:
        return False
    return hmac.compare_digest(sign(secret, stamp, body), signature)
