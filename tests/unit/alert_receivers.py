"""Real local receivers for alert tests: a webhook server (http.server on 127.0.0.1, in a
thread) and an SMTP sink (aiosmtpd on 127.0.0.1). Also used by the integration test."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from callpolicy.alerts.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from ports import free_port


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)

    def signed_with(self, secret: bytes) -> bool:
        return verify(secret, self.headers.get(TIMESTAMP_HEADER, ""),
                      self.headers.get(SIGNATURE_HEADER, ""), self.body, time.time())


@dataclass
class WebhookReceiver:
    """POSTs to any path are recorded; `status` is the answer (e.g. 500 to refuse), or
    `status_for[alert id]`; `attempts`: every alert id posted, refused ones too."""

    port: int = field(default_factory=free_port)
    status: int = 200
    status_for: dict[str, int] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                alert_id = self.headers.get("X-Callpolicy-Alert-Id", "")
                receiver.attempts.append(alert_id)
                status = receiver.status_for.get(alert_id, receiver.status)
                if status < 300:
                    receiver.deliveries.append(Delivery(dict(self.headers.items()), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def of_kind(self, kind: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.payload["kind"] == kind]


class _Sink:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


class SmtpSink:
    """aiosmtpd on 127.0.0.1. `tls`: None (plain), "starttls" (offered and required) or
    "implicit" (SMTPS), with `tls_context` the server's certificate; `users`: SMTP AUTH
    required, these logins and passwords accepted (`logins`: every attempt, refused ones
    too); `data_size_limit`: bigger messages refused (552 to MAIL FROM … SIZE=)."""

    def __init__(self, tls: str | None = None, tls_context: ssl.SSLContext | None = None,
                 users: dict[str, str] | None = None, data_size_limit: int | None = None
                 ) -> None:
        self.port = free_port()
        self._handler = _Sink()
        self.logins: list[tuple[str, str]] = []
        options: dict[str, Any] = {}
        if data_size_limit is not None:
            options.update(data_size_limit=data_size_limit)
        if tls == "starttls":
            options.update(tls_context=tls_context, require_starttls=True)
        elif tls == "implicit":
            options.update(ssl_context=tls_context)
        if users is not None:
            def authenticate(_server: Any, _session: Any, _envelope: Any, _mechanism: str,
                             data: Any) -> AuthResult:
                login, password = data.login.decode(), data.password.decode()
                self.logins.append((login, password))
                return AuthResult(success=users.get(login) == password, handled=False)
            # aiosmtpd counts only STARTTLS as TLS: on SMTPS the whole session already is
            options.update(authenticator=authenticate, auth_required=True,
                           auth_require_tls=tls != "implicit")
        self._controller = Controller(self._handler, hostname="127.0.0.1", port=self.port,
                                      **options)

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def messages(self) -> list[Message]:
        return self._handler.messages


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
