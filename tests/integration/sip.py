"""SIP messages as the integration tests see them: parsed from SIPp's -trace_msg files.

SIPp writes every message it sends or receives, byte for byte, after a header line that gives
the exact length (`UDP message received [912] bytes :` / `UDP message sent (370 bytes):`), so
parsing by length is exact even when a body contains anything at all.

Nothing here talks to the network; `harness.py` runs SIPp and uses these classes.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path

# RFC 3261 compact header forms (+ a few common extension ones)
COMPACT_FORMS = {
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "v": "via",
    "l": "content-length",
    "c": "content-type",
    "e": "content-encoding",
    "s": "subject",
    "k": "supported",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "u": "allow-events",
}

_ENTRY = re.compile(
    rb"-{47} (?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)\n"
    rb"(?P<transport>[A-Z]+) message "
    rb"(?:received \[(?P<rlen>\d+)\] bytes :|sent \((?P<slen>\d+) bytes\):)\n\n"
)


def _canon(name: str) -> str:
    name = name.strip().lower()
    return COMPACT_FORMS.get(name, name)


def unquote_display(text: str) -> str:
    """The value of an RFC 3261 quoted-string (with or without its quotes)."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def quote_display(name: str) -> str:
    """An RFC 3261 quoted-string for a display name (backslash and double quote escaped)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_header_values(value: str) -> list[str]:
    """Split a header value on the commas that separate values (not those inside a
    quoted string or <...>)."""
    parts, cur, quoted, angle, i = [], [], False, 0, 0
    while i < len(value):
        ch = value[i]
        if quoted:
            cur.append(ch)
            if ch == "\\" and i + 1 < len(value):
                cur.append(value[i + 1])
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
            cur.append(ch)
        elif ch == "<":
            angle += 1
            cur.append(ch)
        elif ch == ">":
            angle = max(0, angle - 1)
            cur.append(ch)
        elif ch == "," and angle == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def _params(text: str) -> dict[str, str | None]:
    """`;a=1;b;c="x"` -> {"a": "1", "b": None, "c": "x"} (names lower-cased)."""
    out: dict[str, str | None] = {}
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        name, eq, val = item.partition("=")
        v = val.strip() if eq else None
        if v is not None and len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = unquote_display(v)
        out[name.strip().lower()] = v
    return out


@dataclass(frozen=True)
class SipUri:
    """sip:user@host:port;uri-params?headers (user may be empty, e.g. sip:127.0.0.1)."""

    raw: str
    scheme: str = ""
    user: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""

    @classmethod
    def parse(cls, raw: str) -> SipUri:
        raw = raw.strip()
        scheme, colon, rest = raw.partition(":")
        if not colon:
            return cls(raw=raw)
        rest, _, hdrs = rest.partition("?")
        user: str | None = None
        if "@" in rest:
            user, _, rest = rest.rpartition("@")
            user = user.split(":", 1)[0]  # drop a password
        hostport, _, params = rest.partition(";")
        host, port = hostport, None
        if hostport.startswith("["):
            host, _, p = hostport[1:].partition("]")
            port = int(p[1:]) if p.startswith(":") and p[1:].isdigit() else None
        elif ":" in hostport:
            host, _, p = hostport.rpartition(":")
            port = int(p) if p.isdigit() else None
        return cls(raw=raw, scheme=scheme.lower(), user=user, host=host, port=port,
                   params=_params(params), headers=hdrs)


@dataclass(frozen=True)
class NameAddr:
    """One value of From/To/P-Asserted-Identity/Diversion/Contact/Refer-To...

    `display` is the decoded display name (None if there is none), `display_raw` as it was on
    the wire (quotes and backslashes included); `uri` the SipUri (its `.params` are the URI's
    own parameters, e.g. ;user=phone); `params` the header parameters after the '>' (tag,
    reason, counter, privacy...).
    """

    raw: str
    display: str | None
    display_raw: str | None
    uri: SipUri
    params: dict[str, str | None]

    @property
    def user(self) -> str | None:
        return self.uri.user

    @property
    def host(self) -> str:
        return self.uri.host

    @property
    def uri_params(self) -> dict[str, str | None]:
        return self.uri.params

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @classmethod
    def parse(cls, raw: str) -> NameAddr:
        text = raw.strip()
        display_raw: str | None = None
        if text.startswith('"'):
            i = 1
            while i < len(text):
                if text[i] == "\\":
                    i += 2
                    continue
                if text[i] == '"':
                    break
                i += 1
            display_raw = text[: i + 1]
            text = text[i + 1:].strip()
        elif "<" in text:
            token = text[: text.index("<")].strip()
            display_raw = token or None
            text = text[text.index("<"):]
        if text.startswith("<"):
            end = text.find(">")
            end = len(text) if end < 0 else end
            uri_text, rest = text[1:end], text[end + 1:]
        else:  # addr-spec without <>: everything after the first ';' is a header parameter
            uri_text, sep, rest = text.partition(";")
            rest = sep + rest
        display = None
        if display_raw is not None:
            display = unquote_display(display_raw) if display_raw.startswith('"') else display_raw
        return cls(raw=raw.strip(), display=display, display_raw=display_raw,
                   uri=SipUri.parse(uri_text), params=_params(rest))


@dataclass(frozen=True)
class BodyPart:
    content_type: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def header(self, name: str) -> str | None:
        name = _canon(name)
        return next((v for n, v in self.headers if _canon(n) == name), None)


@dataclass(frozen=True)
class SipMessage:
    """One SIP message, as sent or received by a SIPp process.

    Requests: `method`, `ruri` (SipUri), `ruri_user`. Responses: `status`, `reason_phrase`.
    Headers: `header(name)` (first value, case-insensitive, compact forms understood),
    `header_all(name)` (every occurrence), `headers` (all, in order, as (name, value)).
    Typed views: `from_`, `to`, `pai` (list), `privacy`, `diversion` (list), `geolocation`,
    `geolocation_routing`, `x_headers`, `content_type`, `body`, `parts`, `part(type)`, `pidf`,
    `sdp`, `sipfrag_status`.
    """

    raw: bytes
    direction: str  # "sent" | "received" (from the SIPp process' point of view)
    timestamp: float  # epoch seconds (local clock of SIPp's trace)
    transport: str = "UDP"
    source: str = ""  # the message file it came from

    # ------------------------------------------------------------ start line
    @property
    def start_line(self) -> str:
        return self.raw.split(b"\r\n", 1)[0].decode("utf-8", "replace")

    @property
    def is_response(self) -> bool:
        return self.start_line.startswith("SIP/2.0 ")

    @property
    def is_request(self) -> bool:
        return not self.is_response

    @property
    def status(self) -> int | None:
        if not self.is_response:
            return None
        code = self.start_line.split(" ", 2)[1]
        return int(code) if code.isdigit() else None

    @property
    def reason_phrase(self) -> str | None:
        return self.start_line.split(" ", 2)[2] if self.is_response else None

    @property
    def method(self) -> str | None:
        return None if self.is_response else self.start_line.split(" ", 1)[0]

    @property
    def ruri(self) -> SipUri | None:
        if self.is_response:
            return None
        parts = self.start_line.split(" ")
        return SipUri.parse(parts[1]) if len(parts) > 1 else None

    @property
    def ruri_user(self) -> str | None:
        uri = self.ruri
        return uri.user if uri else None

    # ------------------------------------------------------------ headers / body
    @cached_property
    def _head_body(self) -> tuple[bytes, bytes]:
        head, sep, body = self.raw.partition(b"\r\n\r\n")
        if not sep:
            head, sep, body = self.raw.partition(b"\n\n")
        return head, body

    @cached_property
    def headers(self) -> list[tuple[str, str]]:
        head = self._head_body[0].decode("utf-8", "replace")
        lines = re.split(r"\r?\n", head)[1:]
        out: list[tuple[str, str]] = []
        for line in lines:
            if line[:1] in (" ", "\t") and out:  # folded continuation line
                name, val = out[-1]
                out[-1] = (name, val + " " + line.strip())
                continue
            name, colon, val = line.partition(":")
            if colon:
                out.append((name.strip(), val.strip()))
        return out

    def header_all(self, name: str) -> list[str]:
        name = _canon(name)
        return [v for n, v in self.headers if _canon(n) == name]

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def has_header(self, name: str) -> bool:
        return bool(self.header_all(name))

    def name_addrs(self, name: str) -> list[NameAddr]:
        """Every name-addr of every occurrence of a header (comma-separated ones split)."""
        return [NameAddr.parse(v) for h in self.header_all(name) for v in split_header_values(h)]

    @property
    def body(self) -> bytes:
        return self._head_body[1]

    @property
    def call_id(self) -> str | None:
        return self.header("Call-ID")

    @property
    def cseq(self) -> tuple[int, str] | None:
        value = self.header("CSeq")
        if not value:
            return None
        num, _, method = value.partition(" ")
        return (int(num) if num.isdigit() else -1, method.strip().upper())

    @property
    def via_branch(self) -> str | None:
        via = self.header("Via")
        m = re.search(r";\s*branch=([^;,\s]+)", via or "")
        return m.group(1) if m else None

    # ------------------------------------------------------------ typed views
    @property
    def from_(self) -> NameAddr | None:
        v = self.header("From")
        return NameAddr.parse(v) if v is not None else None

    @property
    def to(self) -> NameAddr | None:
        v = self.header("To")
        return NameAddr.parse(v) if v is not None else None

    @property
    def contact(self) -> NameAddr | None:
        v = self.name_addrs("Contact")
        return v[0] if v else None

    @property
    def pai(self) -> list[NameAddr]:
        """P-Asserted-Identity values (a SIP and a tel URI may both be there)."""
        return self.name_addrs("P-Asserted-Identity")

    @property
    def ppi(self) -> list[NameAddr]:
        return self.name_addrs("P-Preferred-Identity")

    @property
    def rpid(self) -> list[NameAddr]:
        return self.name_addrs("Remote-Party-ID")

    @property
    def privacy(self) -> str | None:
        return self.header("Privacy")

    @property
    def diversion(self) -> list[NameAddr]:
        """Diversion values in order (params: reason, counter, privacy, screen...)."""
        return self.name_addrs("Diversion")

    @property
    def history_info(self) -> list[NameAddr]:
        return self.name_addrs("History-Info")

    @property
    def geolocation(self) -> str | None:
        return self.header("Geolocation")

    @property
    def geolocation_routing(self) -> str | None:
        return self.header("Geolocation-Routing")

    @property
    def x_headers(self) -> dict[str, str]:
        """Every X-* header, name as sent -> value (several occurrences joined with ', ')."""
        out: dict[str, str] = {}
        for name, value in self.headers:
            if name.lower().startswith("x-"):
                out[name] = f"{out[name]}, {value}" if name in out else value
        return out

    @property
    def content_type(self) -> str | None:
        return self.header("Content-Type")

    @property
    def parts(self) -> list[BodyPart]:
        """The body as parts: one part for a simple body, each leaf of a multipart body."""
        ctype = self.content_type
        body = self.body
        if not ctype or not body:
            return []
        if not ctype.lower().startswith("multipart/"):
            return [BodyPart(ctype, [("Content-Type", ctype)], body)]
        blob = b"Content-Type: " + ctype.encode() + b"\r\nMIME-Version: 1.0\r\n\r\n" + body
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(blob)
        out = []
        for sub in msg.walk():
            if sub.is_multipart():
                continue
            payload = sub.get_payload(decode=True) or b""
            out.append(BodyPart(sub.get("Content-Type", "text/plain"), list(sub.items()),
                                payload))
        return out

    def part(self, content_type: str) -> BodyPart | None:
        """The first body part of that type (e.g. 'application/pidf+xml'), parameters
        ignored."""
        want = content_type.lower()
        return next((p for p in self.parts
                     if p.content_type.split(";")[0].strip().lower() == want), None)

    @property
    def pidf(self) -> str | None:
        """The application/pidf+xml part (PIDF-LO location), as text."""
        p = self.part("application/pidf+xml")
        return p.text if p else None

    @property
    def sdp(self) -> str | None:
        p = self.part("application/sdp")
        return p.text if p else None

    @property
    def sipfrag_status(self) -> int | None:
        """For a NOTIFY with a message/sipfrag body: the status code it carries."""
        p = self.part("message/sipfrag")
        m = re.match(r"SIP/2\.0 (\d{3})", p.text) if p else None
        return int(m.group(1)) if m else None

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")

    def summary(self) -> str:
        arrow = "->" if self.direction == "sent" else "<-"
        cseq = self.header("CSeq") or ""
        return f"{arrow} {self.start_line}  [{cseq}]"

    def __str__(self) -> str:
        return self.text


def parse_message_file(path: Path | str, *, dedupe: bool = True) -> list[SipMessage]:
    """Every message of a SIPp -trace_msg file, in order. With `dedupe`, byte-identical
    retransmissions (same direction, same bytes) are dropped."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    out: list[SipMessage] = []
    seen: set[tuple[str, bytes]] = set()
    pos = 0
    while True:
        m = _ENTRY.search(data, pos)
        if not m:
            break
        length = int(m.group("rlen") or m.group("slen"))
        raw = data[m.end(): m.end() + length]
        pos = m.end() + length
        if len(raw) < length:  # the writer is still at it: stop at the last complete one
            break
        direction = "received" if m.group("rlen") else "sent"
        if dedupe:
            key = (direction, raw)
            if key in seen:
                continue
            seen.add(key)
        ts = m.group("ts").decode()
        fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in ts else "%Y-%m-%d %H:%M:%S"
        out.append(SipMessage(raw=raw, direction=direction,
                              timestamp=datetime.strptime(ts, fmt).timestamp(),
                              transport=m.group("transport").decode(), source=str(path)))
    return out


def flow(messages: Iterable[SipMessage]) -> str:
    """A one-line-per-message ladder for assertion messages."""
    return "\n".join(m.summary() for m in messages) or "(no SIP messages)"
