"""The one place that names what passes between Asterisk and callpolicy.

Dialplan -> AGI (daemon at agi://127.0.0.1:4573/decide, or the fallback script), positional
arguments. Attacker-controlled strings travel base64-encoded (BASE64_ENCODE) so that a comma,
quote or newline in a caller name or number cannot split or inject arguments:

    1 kind            outbound | forward | transfer
    2 endpoint        ${CHANNEL(endpoint)} of the calling customer ("" for a forward)
    3 dialled         base64: what was dialled (EXTEN, forward or transfer target)
    4 caller_id       base64: ${CALLERID(num)} as the phone sent it (or the original caller)
    5 privacy         what the phone asked for: `<CALLERID(pres), 6 chars>:<base64 Privacy
                      header>` ([from-phones], [from-trunk]; see `privacy_requested`), or 1 / 0
    6 remote_addr     ${CHANNEL(pjsip,remote_addr)}: the device's IP:port
    7 forwarded_from  base64: the customer number that forwards the call ("" otherwise)

AGI -> dialplan: the channel variables below, all set with ONE `EXEC MSet` command (one round
trip). Every value is reduced to a safe character set before it is sent (see `safe_value`), and
the dialplan treats a missing CP_ACTION as "no decision".
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..policy import CallRequest, Decision, Presentation

AGI_SCRIPT = "decide"
KINDS = ("outbound", "forward", "transfer")
ARGUMENT_COUNT = 7

# The AGI environment block: `agi_<name>: value` lines, then the arguments as agi_arg_1..7.
ENV_PREFIX = "agi_"
ENV_REQUEST = "agi_request"
ENV_CHANNEL = "agi_channel"
ENV_UNIQUEID = "agi_uniqueid"
ENV_LINKEDID = "agi_linkedid"

# The dialplan context that runs the AGI and enforces its decision (dialplan/policy.conf). Its
# channels are the ones the daemon re-decides after an AMI reconnect.
ENFORCE_CONTEXT = "callpolicy-enforce"
# Set by the dialplan before the AGI: the 7 arguments, comma-separated, so that a call can be
# re-decided from AMI (GetVar) after a reconnect.
REQUEST = "CP_REQUEST"
# Set by the dialplan: the number as dialled (before the AGI), and the last resort's digits.
DIALLED = "CP_DIALLED"
LAST_RESORT_DIALLED = "CP_LR"
# UserEvents the dialplan raises when the fallback AGI, or its last resort, decided a call.
FALLBACK_EVENT = "CallpolicyFallback"
LAST_RESORT_EVENT = "CallpolicyLastResort"

ACTION = "CP_ACTION"  # allow | block
REASON = "CP_REASON"  # Reason value, or fail_safe
CATEGORY = "CP_CATEGORY"
DESTINATION = "CP_DEST"  # normalised number to dial on the trunk (E.164 or short number)
CALLER_NUM = "CP_CID_NUM"  # number the called party sees
CALLER_PRES = "CP_CID_PRES"  # Asterisk presentation: allowed | prohib
ASSERTED = "CP_PAI"  # real identity for P-Asserted-Identity
EMERGENCY = "CP_EMERGENCY"  # 1 | 0
LOCATION = "CP_LOCATION"  # verified | nomadic | unknown | ""
# GEOLOC_PROFILE(location_info) civic address when verified, with '|' for ',' (MSet splits on
# commas): the dialplan sets ${REPLACE(CP_LOC_INFO,|,\,)}.
LOCATION_INFO = "CP_LOC_INFO"
DIVERSION = "CP_DIVERSION"  # forwarding number for the Diversion header, or ""
SIP_CODE = "CP_SIP_CODE"  # SIP response for a block: 403 (policy) or 503 (fail-safe)
RULE = "CP_RULE"  # the rule that decided, for the ops (X-Callpolicy-Reason header, logs)
SOURCE = "CP_SOURCE"  # daemon | deadline | fallback

ALL = (ACTION, REASON, CATEGORY, DESTINATION, CALLER_NUM, CALLER_PRES, ASSERTED, EMERGENCY,
       LOCATION, LOCATION_INFO, DIVERSION, SIP_CODE, RULE, SOURCE)

_UNSAFE = re.compile(r"[^A-Za-z0-9 +#*.:/_()@=|-]")
MAX_VALUE = 200


def safe_value(value: object) -> str:
    """A value fit for MSet inside a quoted AGI argument: no comma (MSet's separator), no
    quote, backslash, '$' or '[' (dialplan expression syntax), no newline. Whitelisted."""
    text = "" if value is None else str(value)
    return _UNSAFE.sub("_", text)[:MAX_VALUE]


def agi_quote(text: str) -> str:
    """Quote one AGI command argument (res_agi splits on spaces, honours "…" and \\)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") \
        .replace("\r", " ") + '"'


_ARGUMENT_KEYS = tuple(f"{ENV_PREFIX}arg_{i}" for i in range(1, ARGUMENT_COUNT + 1))


def call_arguments(env: Mapping[str, str]) -> list[str]:
    """The call's AGI arguments (agi_arg_1..7) from an environment block; missing ones ""."""
    get = env.get
    return [get(key, "") for key in _ARGUMENT_KEYS]


def decode_arg(raw: str | None) -> str:
    """A base64 AGI argument back to text. Garbage decodes to "" (then: invalid number)."""
    if not raw:
        return ""
    try:  # base64.b64decode(…, validate=True) without its wrapper: non-ASCII: ValueError
        return binascii.a2b_base64(raw.strip(), strict_mode=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""


def encode_arg(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


#: RFC 3323/3325 priv-values that withhold the caller's identity; matched as substrings of the
#: lower-cased header, as the dialplan's REGEX did before (a broader match keeps more private)
_PRIVACY_WORDS = ("id", "user", "header")


def privacy_requested(raw: str) -> bool:
    """Argument 5 as a flag. The dialplan passes the raw facts, `<pres>:<b64 header>` with
    pres the first 6 characters of CALLERID(pres) (PAI/RPID privacy: "prohib") and the
    Privacy header base64-encoded (attacker-controlled); "1" / "0" are taken as they are
    (transfers, and a dialplan older than the daemon). Deciding here rather than in the
    dialplan saves Asterisk a REGEX (regcomp per call) and an expression per call."""
    if raw in ("0", "1", ""):
        return raw == "1"
    pres, _, header = raw.partition(":")
    if pres.lower() == "prohib":
        return True
    text = decode_arg(header).lower()
    return any(word in text for word in _PRIVACY_WORDS)


@dataclass(frozen=True, slots=True)
class AgiCall:
    """What the dialplan passed, decoded. Every field is untrusted."""

    kind: str
    endpoint: str
    dialled: str
    caller_id: str
    privacy: bool
    remote_addr: str
    forwarded_from: str

    @classmethod
    def from_args(cls, args: Sequence[str]) -> AgiCall:
        padded = list(args) + [""] * (ARGUMENT_COUNT - len(args))
        kind = padded[0] if padded[0] in KINDS else "outbound"
        return cls(kind, padded[1][:64], decode_arg(padded[2])[:128],
                   decode_arg(padded[3])[:128], privacy_requested(padded[4][:512]),
                   padded[5][:64], decode_arg(padded[6])[:128])

    def request(self, now: datetime) -> CallRequest:
        """The call as the policy sees it (empty arguments: not given)."""
        return CallRequest(
            dialled=self.dialled,
            now=now,
            endpoint=self.endpoint or None,
            source_ip=self.remote_addr or None,
            caller_id=self.caller_id or None,
            privacy=self.privacy,
            forwarded_from=self.forwarded_from or None,
        )


def civic_location_info(decision: Decision) -> str:
    """GEOLOC_PROFILE(location_info) for a verified emergency call (RFC 5139 civic address)."""
    address = decision.location_address
    if address is None:
        return ""
    fields = {"country": address.country, "A3": address.municipality, "RD": address.street,
              "HNO": address.house_number, "PC": address.postcode}
    # Values are operator data, but still: no separators that would break the list.
    return "|".join(f"{k}={_UNSAFE.sub(' ', v).replace('=', ' ').replace('|', ' ').strip()}"
                    for k, v in fields.items())


def decision_variables(decision: Decision, source: str = "daemon") -> dict[str, str]:
    cid = decision.caller_id
    blocked_code = "503" if decision.reason.value == "fail_safe" else "403"
    return {
        ACTION: decision.action.value,
        REASON: decision.reason.value,
        CATEGORY: decision.category.value,
        DESTINATION: decision.destination or "",
        CALLER_NUM: cid.number or "",
        CALLER_PRES: "prohib" if cid.presentation is Presentation.RESTRICTED else "allowed",
        ASSERTED: cid.asserted or "",
        EMERGENCY: "1" if decision.emergency else "0",
        LOCATION: decision.location.value if decision.location else "",
        LOCATION_INFO: civic_location_info(decision),
        DIVERSION: decision.diversion or "",
        SIP_CODE: "" if decision.allowed else blocked_code,
        RULE: decision.rule,
        SOURCE: source,
    }


def mset_command(variables: Mapping[str, str]) -> str:
    """The single AGI command that sets every variable: EXEC MSet "A=1,B=2,…"."""
    pairs = ",".join(f"{name}={safe_value(value)}" for name, value in variables.items())
    return f"EXEC MSet {agi_quote(pairs)}\n"
