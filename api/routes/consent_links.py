"""The links in consent emails: double opt-in confirmation and RFC 8058 one-click unsubscribe.

No API key: the signed token in the link is the only credential, and all it allows is confirming
or withdrawing offers by email for the subject it names. Browsers (``Accept: text/html``) get a
small HTML page; other clients get JSON, and every refusal has the standard error body.
"""

from __future__ import annotations

from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from api.deps import RuntimeDep, SessionDep
from api.errors import ErrorResponse, error_response
from consent.optin import (
    EmailOptIn,
    LinkExpired,
    LinkOutcome,
    LinkRefused,
    LinkSuperseded,
    OneClickUnsubscribe,
    SubjectErased,
)

# A browser (Accept: text/html) gets a page; any other client the JSON bodies below.
HTML: dict[str, Any] = {"text/html": {"schema": {"type": "string"}}}


class LinkOutcomeOut(BaseModel):
    subject_id: str
    state: str
    recorded: bool
    event_id: int | None
    message: str


DONE: dict[int | str, dict[str, Any]] = {200: {"model": LinkOutcomeOut, "content": HTML}}

router = APIRouter(
    prefix="/v1/consent",
    tags=["consent"],
    responses={s: {"model": ErrorResponse, "content": HTML} for s in (400, 409, 410, 422)},
)

Token = Annotated[str, Query(max_length=4096, description="the signed token from the email")]
ONE_CLICK = "One-Click"


def _status(exc: LinkRefused) -> int:
    if isinstance(exc, LinkExpired | SubjectErased):
        return 410
    if isinstance(exc, LinkSuperseded):
        return 409
    return 400


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _page(title: str, body_html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;"
        "padding:0 1rem;line-height:1.5}button{font-size:1rem;padding:.5rem 1rem}</style>"
        f"</head><body><h1>{escape(title)}</h1>{body_html}</body></html>",
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _refused(request: Request, exc: LinkRefused) -> Response:
    status = _status(exc)
    if _wants_html(request):
        return _page("This link cannot be used", f"<p>{escape(exc.message)}</p>", status)
    return error_response(status, exc.code, exc.message)


def _done(request: Request, outcome: LinkOutcome, title: str, text: str) -> Response:
    if _wants_html(request):
        return _page(title, f"<p>{escape(text)}</p>")
    body: dict[str, Any] = {
        "subject_id": outcome.subject_id,
        "state": outcome.state,
        "recorded": outcome.event is not None,
        "event_id": outcome.event.id if outcome.event else None,
        "message": text,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def _evidence(request: Request) -> dict[str, Any]:
    return {
        "ip": request.client.host if request.client else None,
        "user_agent": request.headers.get("user-agent"),
    }


@router.get(
    "/confirm",
    summary="Follow the double opt-in link: confirms offers by email",
    responses=DONE,
)
def confirm(
    request: Request, session: SessionDep, runtime: RuntimeDep, token: Token = ""
) -> Response:
    optin = EmailOptIn(session, runtime.ledger_config, runtime.state, runtime.links)
    try:
        outcome = optin.confirm(token, _evidence(request), runtime.clock.now())
    except LinkRefused as exc:
        return _refused(request, exc)
    if outcome.event is None:
        return _done(request, outcome, "Already confirmed", "Offers by email were already on.")
    return _done(
        request,
        outcome,
        "Offers by email confirmed",
        "Thank you: you will now get short-lived offers by email. Every offer email has a link "
        "to stop them.",
    )


@router.get(
    "/unsubscribe",
    summary="The unsubscribe link opened in a browser: a page with one button",
    responses=DONE,
)
def unsubscribe_page(
    request: Request, session: SessionDep, runtime: RuntimeDep, token: Token = ""
) -> Response:
    """Shows the button only: a GET never withdraws (mail scanners follow links)."""
    unsubscribe = OneClickUnsubscribe(session, runtime.ledger_config, runtime.state, runtime.links)
    try:
        unsubscribe.check(token)
    except LinkRefused as exc:
        return _refused(request, exc)
    action = escape(f"?{request.url.query}")  # this same URL, whatever prefix a proxy adds
    return _page(
        "Stop offers by email?",
        f"<form method='post' action='{action}'>"
        f"<input type='hidden' name='List-Unsubscribe' value='{ONE_CLICK}'>"
        "<button type='submit'>Stop offers by email</button></form>",
    )


@router.post(
    "/unsubscribe",
    summary="RFC 8058 one-click unsubscribe: withdraws offers by email",
    description="The body is the form field `List-Unsubscribe=One-Click`, as mailbox providers "
    "send it. The token in the query is the only credential.",
    responses=DONE,
)
def unsubscribe(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    token: Token = "",
    list_unsubscribe: Annotated[str | None, Form(alias="List-Unsubscribe")] = None,
) -> Response:
    if list_unsubscribe != ONE_CLICK:
        return _refused(
            request,
            LinkRefused(
                "a one-click unsubscribe needs the form body List-Unsubscribe=One-Click (RFC 8058)",
                code="invalid_request",
            ),
        )
    unsubscribe = OneClickUnsubscribe(session, runtime.ledger_config, runtime.state, runtime.links)
    try:
        outcome = unsubscribe.unsubscribe(token, _evidence(request), runtime.clock.now())
    except LinkRefused as exc:
        return _refused(request, exc)
    text = "You will get no more offers by email. You can turn them on again in the app."
    if outcome.event is None:
        return _done(request, outcome, "Already unsubscribed", text)
    return _done(request, outcome, "Unsubscribed", text)
