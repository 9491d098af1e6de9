"""What the client raises: the engine's error body, or a transport failure after retries."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A 4xx/5xx answer: ``status``, the engine's ``code`` and ``message``
    (``{"error": {"code", "message"}}``), and the raw body."""

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body

    @classmethod
    def from_response(cls, status: int, body: Any, text: str) -> ApiError:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            return cls(status, str(error.get("code", "error")), str(error.get("message", "")), body)
        return cls(status, "http_error", text[:500], body)
