"""Offer email: SMTP for real delivery, a file sink for the demo. Both build the same message.

The same two classes send the consent confirmation email of the double opt-in
(``send_confirmation``); the file sink writes those under ``consent/`` next to the offer mail.
"""

from __future__ import annotations

import html
import smtplib
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from notify.channel import OfferMessage, PermanentSendError, SendReceipt, TransientSendError

# Links carry signed tokens; the default 78-column folding would turn a long List-Unsubscribe
# value into RFC 2047 encoded words, which mail clients do not read as a URL. RFC 5322 allows
# 998 characters per line.
EMAIL_POLICY = policy.default.clone(max_line_length=998)
CONFIRMATION_KIND = "consent-confirmation"


def _new_message(sender: str, to: str) -> EmailMessage:
    email = EmailMessage(policy=EMAIL_POLICY)
    email["From"] = sender
    email["To"] = to
    return email


def build_email(message: OfferMessage, sender: str) -> EmailMessage:
    """A text part and an HTML part with the same content: the code, the expiry, a link to the
    live countdown page when there is one, and the one-click unsubscribe link."""
    expires = message.expires_at.strftime("%H:%M:%S UTC")
    email = _new_message(sender, message.address)
    email["Subject"] = f"{message.title} - {message.discount_text}, until {expires}"
    email["Message-ID"] = make_msgid(idstring=message.idempotency_key.replace(":", "."))
    email["X-Offer-Engine-Idempotency-Key"] = message.idempotency_key
    email["X-Offer-Expires"] = format_datetime(message.expires_at)
    footer = ""
    if message.unsubscribe_url:
        # RFC 8058 one-click: the mailbox provider POSTs "List-Unsubscribe=One-Click" to the URL.
        email["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
        email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        footer = f"\nNo more offers by email: {message.unsubscribe_url}\n"
    left = f"{message.ttl_s // 60} min {message.ttl_s % 60} s from sending"
    countdown = f"Time left, live: {message.countdown_url}\n" if message.countdown_url else ""
    email.set_content(
        f"{message.body}\n\n"
        f"{message.discount_text} at {message.store_name}.\n"
        f"Your code: {message.code}\n"
        f"Valid until {expires} ({left}).\n"
        f"{countdown}"
        f"{footer}"
    )
    email.add_alternative(_html(message, expires, left), subtype="html")
    return email


def _html(message: OfferMessage, expires: str, left: str) -> str:
    e = html.escape
    countdown = (
        f'<p><a href="{e(message.countdown_url)}">See the time left</a></p>'
        if message.countdown_url
        else ""
    )
    unsubscribe = (
        f'<p style="font-size:small"><a href="{e(message.unsubscribe_url)}">'
        "No more offers by email</a></p>"
        if message.unsubscribe_url
        else ""
    )
    return (
        f"<!doctype html><html><body><h1>{e(message.title)}</h1><p>{e(message.body)}</p>"
        f"<p><strong>{e(message.discount_text)}</strong> at {e(message.store_name)}.</p>"
        f'<p>Your code: <code style="font-size:x-large">{e(message.code)}</code></p>'
        f"<p>Valid until {e(expires)} ({e(left)}).</p>{countdown}{unsubscribe}</body></html>"
    )


def build_confirmation_email(
    *, to: str, link: str, expires_at: datetime, sender: str, ref: str
) -> EmailMessage:
    """The double opt-in email: one link that confirms offers by email to this address."""
    email = _new_message(sender, to)
    email["Subject"] = "Please confirm: offers by email"
    email["Message-ID"] = make_msgid(idstring=f"confirm.{ref}")
    email["X-Offer-Engine-Kind"] = CONFIRMATION_KIND
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(
        "You asked to receive short-lived offers by email at this address.\n\n"
        f"Confirm by opening this link:\n{link}\n\n"
        f"The link works until {expires_at.strftime('%Y-%m-%d %H:%M UTC')}. "
        "If you did not ask for this, ignore this email: nothing will be sent to you.\n"
    )
    return email


def _submit(host: str, port: int, timeout_s: float, email: EmailMessage) -> None:
    try:
        with smtplib.SMTP(host, port, timeout=timeout_s) as smtp:
            refused = smtp.send_message(email)
    except smtplib.SMTPRecipientsRefused as exc:
        raise PermanentSendError(f"recipient refused: {exc.recipients}") from exc
    except smtplib.SMTPResponseException as exc:
        if 500 <= exc.smtp_code < 600:
            raise PermanentSendError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
        raise TransientSendError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        raise TransientSendError(f"SMTP server unreachable: {exc}") from exc
    if refused:
        raise PermanentSendError(f"recipient refused: {refused}")


class SmtpEmailChannel:
    name = "email"

    def __init__(self, host: str, port: int, sender: str, timeout_s: float = 10.0) -> None:
        self._host, self._port, self._sender, self._timeout = host, port, sender, timeout_s

    def send(self, message: OfferMessage) -> SendReceipt:
        email = build_email(message, self._sender)
        _submit(self._host, self._port, self._timeout, email)
        return SendReceipt(provider_id=str(email["Message-ID"]))

    def send_confirmation(self, *, to: str, link: str, expires_at: datetime, ref: str) -> None:
        email = build_confirmation_email(
            to=to, link=link, expires_at=expires_at, sender=self._sender, ref=ref
        )
        _submit(self._host, self._port, self._timeout, email)


class FileEmailChannel:
    """Writes each offer email as an ``.eml`` file: the demo's inbox, no server needed."""

    name = "email"

    def __init__(self, directory: Path, sender: str) -> None:
        self._directory = directory
        self._sender = sender

    def send(self, message: OfferMessage) -> SendReceipt:
        email = build_email(message, self._sender)
        self._directory.mkdir(parents=True, exist_ok=True)
        path = self._directory / f"{message.idempotency_key.replace(':', '_')}.eml"
        path.write_bytes(bytes(email))
        return SendReceipt(provider_id=str(path))

    def send_confirmation(self, *, to: str, link: str, expires_at: datetime, ref: str) -> None:
        email = build_confirmation_email(
            to=to, link=link, expires_at=expires_at, sender=self._sender, ref=ref
        )
        folder = self._directory / "consent"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"confirm-{ref}.eml").write_bytes(bytes(email))
