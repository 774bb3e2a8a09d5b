"""Pure call rules: numbers in, Decision out. No I/O, no asyncio, no Asterisk."""

from .defaults import build_policy_config
from .destinations import Classifier, free_call
from .engine import Engine
from .model import (
    Action,
    Address,
    CallerId,
    CallRequest,
    Category,
    Customer,
    Decision,
    Endpoint,
    Event,
    FraudLimits,
    LiveCounts,
    Location,
    PolicyConfig,
    Presentation,
    Reason,
    Snapshot,
    Unblock,
    UnblockKind,
    UnblockState,
    unblock_state,
)
from .numbers import geographic_zone, national_form, normalise, normalise_number, normalise_prefix

__all__ = [
    "Action", "Address", "CallRequest", "CallerId", "Category", "Classifier", "Customer",
    "Decision", "Endpoint", "Engine", "Event", "FraudLimits", "LiveCounts",
    "Location", "PolicyConfig", "Presentation",
    "Reason", "Snapshot", "Unblock", "UnblockKind", "UnblockState", "build_policy_config",
    "free_call",
    "geographic_zone", "national_form", "normalise", "normalise_number", "normalise_prefix",
    "unblock_state",
]
