"""A logging filter that keeps credentials out of log lines.

The engine itself logs keys by their visible id only; this filter is the second line for text it
does not write: access logs with a confirmation ``token=`` in a link's query, a stray
``Authorization: Bearer`` value, a full ``oek_`` key in a library's message.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

_PATTERNS = (
    (re.compile(r"(?i)\b(token|key|secret|signature)=[^&\s\"']+"), r"\1=***"),
    (re.compile(r"(?i)\bBearer\s+[^\s\"',]+"), "Bearer ***"),
    (re.compile(r"\boek_([0-9a-f]{1,24})_[A-Za-z0-9_-]+"), r"oek_\1_***"),
)


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites the record's message with credentials masked; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Arguments are masked one by one, so formatters that read them (uvicorn's access log
        # unpacks its tuple) keep working; whatever still shows a credential once the message
        # is put together is replaced by the masked message.
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_redaction(*logger_names: str) -> None:
    """Attach the filter to the root logger's handlers and to the named loggers' handlers (a
    filter on a handler also sees records propagated from child loggers)."""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in logger_names)]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets())


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration with the filter on every handler (access log too)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_secrets"] = {"()": RedactSecrets}
    for handler in config["handlers"].values():
        handler["filters"] = [*handler.get("filters", []), "redact_secrets"]
    return config
