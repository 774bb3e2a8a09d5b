"""Delivering one stored alert over one channel: a webhook POST (httpx, signed) or an e-mail
(stdlib smtplib in a worker thread). Each raises DeliveryError with a one-line reason.

E-mail over TLS (STARTTLS or SMTPS) verifies the relay's certificate and name against the
system's CAs or the channel's `cafile`; smtplib's own default context verifies nothing, and
a relay that does not offer STARTTLS when asked is a failure, never a plain-text send."""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
import time
from email.message import EmailMessage
from typing import Protocol

import httpx

from ..service.config_file import ConfigError
from .config import Email, Webhook
from .signature import ALERT_ID_HEADER, headers

USER_AGENT = "callpolicy-alerts/1"
MAX_SUBJECT = 150


# Answers that refuse this one alert (its content), not the channel: the row waits with its
# own back-off and the channel's later rows go on. Any other failure (timeout, refused
# connection, 401/403/404, 408, 429, 5xx) is the channel's: it pauses the channel.
REFUSED_CONTENT = frozenset({400, 413, 415, 422})


class DeliveryError(Exception):
    """A delivery that failed (retried with back-off). `content`: the receiver refused this
    alert itself, so the channel's other alerts still go."""

    def __init__(self, message: str, *, content: bool = False) -> None:
        super().__init__(message)
        self.content = content


class Sender(Protocol):
    async def send(self, alert_id: str, body: bytes) -> None: ...

    async def close(self) -> None: ...


class WebhookSender:
    def __init__(self, hook: Webhook, secret: bytes) -> None:
        self.hook = hook
        self._secret = secret
        # no proxy from the environment, no redirects: the configured URL gets the alert
        self._client = httpx.AsyncClient(timeout=hook.timeout, trust_env=False,
                                         follow_redirects=False)

    async def send(self, alert_id: str, body: bytes) -> None:
        sent = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                ALERT_ID_HEADER: alert_id, **headers(self._secret, int(time.time()), body)}
        try:
            response = await self._client.post(self.hook.url, content=body, headers=sent)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"no answer within {self.hook.timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}".strip(": ")) from exc
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"HTTP {response.status_code} {response.reason_phrase}",
                                content=response.status_code in REFUSED_CONTENT)

    async def close(self) -> None:
        await self._client.aclose()


class EmailSender:
    def __init__(self, mail: Email, password: str | None = None) -> None:
        if (mail.username is None) != (password is None):
            raise ValueError(f"alerts.email {mail.name!r}: a password goes with a username")
        self.mail = mail
        self._password = password
        self._tls = tls_context(mail) if mail.tls else None

    async def send(self, alert_id: str, body: bytes) -> None:
        message = email_message(self.mail, body)
        where = f"SMTP {self.mail.host}:{self.mail.port}"
        try:
            await asyncio.to_thread(self._send, message)
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}: {exc}",
                                content=_refuses_content(exc)) from exc
        except UnicodeError as exc:  # never the text: it could quote the password
            raise DeliveryError(f"{where}: {type(exc).__name__} (a non-ASCII value in the "
                                "SMTP dialogue)") from None
        except (OSError, smtplib.SMTPException) as exc:
            # also every recipient refused: the channel's `to`, not this alert
            raise DeliveryError(f"{where}: {type(exc).__name__}: {exc}") from exc

    def _send(self, message: EmailMessage) -> None:
        mail, timeout = self.mail, self.mail.timeout
        smtp = (smtplib.SMTP_SSL(mail.host, mail.port, timeout=timeout, context=self._tls)
                if mail.implicit_tls else smtplib.SMTP(mail.host, mail.port, timeout=timeout))
        with smtp:
            if mail.starttls:
                smtp.starttls(context=self._tls)
            if mail.username is not None and self._password is not None:
                smtp.login(mail.username, self._password)
            smtp.send_message(message)

    async def close(self) -> None:
        return None


_SESSION_CODES = frozenset({530, 535, 538})  # authentication / encryption required


def _refuses_content(exc: smtplib.SMTPResponseException) -> bool:
    """A permanent refusal of this message (its size, its text): the channel's other alerts
    still go. Not so a session that needs AUTH or TLS, or MAIL FROM refused for the sender
    (the channel's configuration): the channel pauses and retries."""
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return exc.smtp_code == 552  # the SIZE announced with MAIL FROM: this message's
    error = exc.smtp_error if isinstance(exc.smtp_error, bytes) else b""
    return (500 <= exc.smtp_code < 600 and exc.smtp_code not in _SESSION_CODES
            and not error.startswith(b"5.7.0"))


def tls_context(mail: Email) -> ssl.SSLContext:
    """A verifying client context (ConfigError: the channel's cafile cannot be read)."""
    what = f"alerts.email {mail.name!r} cafile"
    try:
        return ssl.create_default_context(cafile=mail.cafile)
    except FileNotFoundError as exc:  # said as a missing secret file is
        raise ConfigError(f"{what} {mail.cafile} does not exist", bad_value=False) from exc
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot read {what} {mail.cafile}: "
                          f"{getattr(exc, 'strerror', None) or exc}",
                          bad_value=isinstance(exc, ssl.SSLError)) from exc


def email_message(mail: Email, body: bytes) -> EmailMessage:
    """Plain text: the summary, then the JSON payload inline (indented)."""
    payload = json.loads(body)
    subject = f"[callpolicy] {payload['kind']} {payload['status']}: {payload['summary']}"
    message = EmailMessage()
    message["Subject"] = subject[:MAX_SUBJECT].replace("\n", " ")
    message["From"] = mail.sender
    message["To"] = ", ".join(mail.to)
    message["X-Callpolicy-Alert-Id"] = str(payload["id"])
    message.set_content(
        f"{payload['summary']}\n\nseverity {payload['severity']}, node {payload['node']}, "
        f"count {payload['count']}, first seen {payload['first_seen']}, last seen "
        f"{payload['last_seen']}\n\n{json.dumps(payload, indent=2, sort_keys=True)}\n")
    return message
