"""The bare endpoint ``offer-engine bench api`` compares the engine with: the same route and the
same request model (``PingBatchIn``, validated the same way), then 204, nothing else. It shows
what the HTTP server, the JSON parsing and the validation alone cost on this machine."""

from __future__ import annotations

from fastapi import FastAPI, Response

from api.schemas import PingBatchIn


def create_bare_app() -> FastAPI:
    app = FastAPI(title="bare ping endpoint", openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/v1/sdk/pings", status_code=204)
    def post_pings(body: PingBatchIn) -> Response:
        return Response(status_code=204)

    return app
