"""Offer email: SMTP for real delivery, a file sink for the demo. Both build the same message."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from notify.channel import OfferMessage, PermanentSendError, SendReceipt, TransientSendError


def build_email(message: OfferMessage, sender: str) -> EmailMessage:
    expires = message.expires_at.strftime("%H:%M:%S UTC")
    email = EmailMessage()
    email["From"] = sender
    email["To"] = message.address
    email["Subject"] = f"{message.title} - {message.discount_text}, until {expires}"
    email["Message-ID"] = make_msgid(idstring=message.idempotency_key.replace(":", "."))
    email["X-Offer-Engine-Idempotency-Key"] = message.idempotency_key
    email["X-Offer-Expires"] = format_datetime(message.expires_at)
    email.set_content(
        f"{message.body}\n\n"
        f"{message.discount_text} at {message.store_name}.\n"
        f"Your code: {message.code}\n"
        f"Valid until {expires} ({message.ttl_s // 60} min {message.ttl_s % 60} s from sending).\n"
    )
    return email


class SmtpEmailChannel:
    name = "email"

    def __init__(self, host: str, port: int, sender: str, timeout_s: float = 10.0) -> None:
        self._host, self._port, self._sender, self._timeout = host, port, sender, timeout_s

    def send(self, message: OfferMessage) -> SendReceipt:
        email = build_email(message, self._sender)
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
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
        return SendReceipt(provider_id=str(email["Message-ID"]))


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
