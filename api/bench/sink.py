"""A local HTTP server that receives the engine's signed webhooks and records each one.

It checks the HMAC signature (``verify_webhook_signature``), notes the arrival instant, the
``Idempotency-Key`` and the coupon's ``expires_at`` from the body, and answers 200. A receiver
that dedups by ``Idempotency-Key`` processes each key once; ``receipts`` keeps every arrival so
a test can see a repeat (the same key again) as well.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from notify.webhook import SIGNATURE_HEADER, verify_webhook_signature


@dataclass(frozen=True, slots=True)
class Receipt:
    key: str
    received_at: datetime
    expires_at: datetime
    signed: bool


class WebhookSink:
    def __init__(self, secret: str, delay_s: float = 0.0) -> None:
        self.secret = secret
        self.delay_s = delay_s
        self.receipts: list[Receipt] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                sink._record(self.headers.get("Idempotency-Key"), self.headers, body)
                if sink.delay_s:
                    time.sleep(sink.delay_s)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/offers"

    def start(self) -> WebhookSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record(self, key: str | None, headers: Any, body: bytes) -> None:
        now = datetime.now(UTC)
        signed = verify_webhook_signature(self.secret, headers.get(SIGNATURE_HEADER), body, now)
        payload = json.loads(body)
        receipt = Receipt(key or "", now, datetime.fromisoformat(payload["expires_at"]), signed)
        with self._lock:
            self.receipts.append(receipt)

    def snapshot(self) -> list[Receipt]:
        with self._lock:
            return list(self.receipts)

    def count(self) -> int:
        with self._lock:
            return len(self.receipts)
