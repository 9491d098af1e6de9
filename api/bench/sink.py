"""A local HTTP server that receives the engine's signed webhooks and records each one.

It checks the HMAC signature (``verify_webhook_signature``), notes the arrival instant, the
``Idempotency-Key`` and the coupon's ``expires_at`` from the body, and answers 200. A receiver
that dedups by ``Idempotency-Key`` processes each key once; ``receipts`` keeps every arrival so
a test can see a repeat (the same key again) as well.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
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


class SinkProcess:
    """A ``WebhookSink`` in a child process (its own interpreter and GIL, as a real receiver
    would be), writing one line per arrival to a file the parent reads at the end."""

    def __init__(self, secret: str, folder: Path) -> None:
        self.secret = secret
        self.log = folder / "sink.tsv"
        context = multiprocessing.get_context("spawn")
        self._ready: Any = context.Queue()
        self._stop: Any = context.Event()
        self._process = context.Process(
            target=_serve, args=(secret, str(self.log), self._ready, self._stop), daemon=True
        )
        self.url = ""

    def start(self) -> SinkProcess:
        self._process.start()
        self.url = str(self._ready.get(timeout=60))
        return self

    def stop(self) -> None:
        self._stop.set()
        self._process.join(timeout=30)

    def snapshot(self) -> list[Receipt]:
        receipts = []
        if self.log.exists():
            for line in self.log.read_text().splitlines():
                key, received, expires, signed = line.split("\t")
                receipts.append(
                    Receipt(
                        key,
                        datetime.fromisoformat(received),
                        datetime.fromisoformat(expires),
                        signed == "1",
                    )
                )
        return receipts


def _serve(secret: str, log_path: str, ready: Any, stop: Any) -> None:
    sink = WebhookSink(secret).start()
    ready.put(sink.url)
    with open(log_path, "w") as out:
        written = 0
        while not stop.wait(0.2):
            written = _flush(sink, out, written)
        sink.stop()
        _flush(sink, out, written)


def _flush(sink: WebhookSink, out: Any, written: int) -> int:
    receipts = sink.snapshot()[written:]
    for r in receipts:
        out.write(
            f"{r.key}\t{r.received_at.isoformat()}\t{r.expires_at.isoformat()}\t{int(r.signed)}\n"
        )
    out.flush()
    return written + len(receipts)
