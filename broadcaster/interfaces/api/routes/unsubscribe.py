"""The unsubscribe link in every message to a subscriber: open, without a bearer token (the link is signed).

GET    /unsubscribe/{token}     a page asking to confirm: mail scanners follow links, so GET changes nothing
POST   /unsubscribe/{token}     with the body List-Unsubscribe=One-Click: unsubscribes (RFC 8058)
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from broadcaster.domain import links
from broadcaster.interfaces.api.deps import SettingsDep, read_form
from broadcaster.interfaces.api.guard import AuthFirstRoute
from broadcaster.interfaces.api.problems import STANDARD_ERRORS, Problem, by_reference, problem
from broadcaster.store.models import SubscriberStatus

router = APIRouter(route_class=AuthFirstRoute)

_TOKEN = r"^[0-9A-Za-z_.-]+$"
ONE_CLICK = ("List-Unsubscribe", "One-Click")
Token = Annotated[str, Path(pattern=_TOKEN, max_length=200, description="The signed token of the link.")]

# The pages are HTML: their problems are documented by reference (``problems.problem``).
PROBLEMS = by_reference(STANDARD_ERRORS)
PAGE_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "The link is not valid (mangled, or its subscriber was removed).",
        "content": {"text/html": {}},
    }
}
_FORM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            media: {
                "schema": {
                    "type": "object",
                    "properties": {"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}},
                    "required": ["List-Unsubscribe"],
                }
            }
            for media in ("application/x-www-form-urlencoded", "multipart/form-data")
        },
    }
}


@router.get(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    responses={**PAGE_NOT_FOUND, 422: PROBLEMS[422], 503: PROBLEMS[503]},
    summary="The page an unsubscribe link opens: it asks to confirm (GET changes nothing)",
    tags=["subscribers"],
)
def unsubscribe_page(token: Token, settings: SettingsDep) -> HTMLResponse:
    found = links.subscriber_by_token(settings, token)
    if found is None:
        return _invalid_link()
    who = html.escape(_masked(found))
    if found["status"] == SubscriberStatus.unsubscribed:
        return _page("Unsubscribed", f"<p>{who} is unsubscribed: it gets no more status updates.</p>")
    form = (
        f"<p>Stop sending status updates to {who}?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe", form)


@router.post(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    responses={
        400: problem("The body does not hold List-Unsubscribe=One-Click."),
        **PAGE_NOT_FOUND,
        422: PROBLEMS[422],
        503: PROBLEMS[503],
    },
    openapi_extra=_FORM_BODY,
    summary="One-click unsubscribe (RFC 8058): POST List-Unsubscribe=One-Click to the link",
    tags=["subscribers"],
)
async def unsubscribe(token: Token, request: Request, settings: SettingsDep) -> Response:
    fields = await read_form(request)
    if fields.get(ONE_CLICK[0]) != ONE_CLICK[1]:
        raise Problem(400, "Bad Request", "the body must hold List-Unsubscribe=One-Click (RFC 8058)", "not-one-click")
    found = await run_in_threadpool(links.unsubscribe_by_token, settings, token)
    if found is None:
        return _invalid_link()
    return _page("Unsubscribed", f"<p>{html.escape(_masked(found))} gets no more status updates.</p>")


def _masked(view: dict[str, Any]) -> str:
    """The address, partly hidden: a link forwarded to someone else shows little."""
    if view["email"]:
        local, _, domain = str(view["email"]).partition("@")
        return f"{local[:1]}***@{domain}"
    phone = str(view["phone"])
    return f"{phone[:3]}***{phone[-2:]}"


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    document = (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>"
        f'<body style="font-family: sans-serif; max-width: 36em; margin: 3em auto">'
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status_code, headers={"Cache-Control": "no-store"})


def _invalid_link() -> HTMLResponse:
    return _page(
        "Link not valid", "<p>This unsubscribe link is not valid. Copy the whole link from the email.</p>", 404
    )
