"""The root of every domain error. ``api/errors.py`` maps each subclass to an HTTP status."""

from __future__ import annotations


class EngineError(Exception):
    """A refusal with a stable machine-readable ``code`` and a human message."""

    code = "engine_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(EngineError):
    code = "not_found"


class InvalidInput(EngineError):
    code = "invalid_input"


class Unavailable(EngineError):
    """A dependency (database, hot-state store) cannot be reached; fail closed."""

    code = "unavailable"


class Unauthenticated(EngineError):
    code = "unauthenticated"


class Forbidden(EngineError):
    code = "forbidden"


class RateLimited(EngineError):
    """Too many requests from one key, device or address in the current window."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
