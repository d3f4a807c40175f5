"""The channels' inbound webhooks: a provider's calls to the API (an SMS STOP or START, ...), without a token.

    POST   {webhook.path}           each channel type's inbound webhook (``Channel.inbound``, found through the
                                    channel registry), e.g. the sms channel's STOP and START replies

An inbound webhook gets the URL its provider called (``[subscribers] api_url`` + the path when set, behind a
proxy, and only then; else the URL as this server saw it), the headers and the form; it authenticates the
provider itself, and changes subscribers through ``broadcaster.domain.inbound`` (each provider message once: a
replay changes nothing). Its refusals are problems: a 422 naming the form field, or the status it gives.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from broadcaster.domain.inbound import SubscriberInbox
from broadcaster.interfaces.api.deps import app_settings, read_form
from broadcaster.interfaces.api.guard import AuthFirstRoute
from broadcaster.interfaces.api.problems import STANDARD_ERRORS, Problem, field_problem, problem, validation_problem
from channels.base import Form, InboundRefused, InboundRequest, InboundWebhook
from channels.registry import inbound_webhooks


def webhooks_router() -> APIRouter:
    """A router with each registered channel type's inbound webhook (asked of the registry when the app is made,
    so a type registered at run time is served too)."""
    router = APIRouter(route_class=AuthFirstRoute)
    for kind, webhook in inbound_webhooks().items():
        router.add_api_route(
            webhook.path,
            _endpoint(kind, webhook),
            methods=["POST"],
            # Named after its path (/webhooks/twilio: twilio_inbound), which makes the operation id.
            name=f"{webhook.path.rstrip('/').rpartition('/')[2]}_inbound",
            response_class=Response,
            responses={
                200: {"description": webhook.answer, "content": {webhook.media_type: {}}},
                **{status: problem(meaning) for status, meaning in webhook.refusals.items()},
                413: problem("The body is larger than `[api] max_body_bytes`."),
                503: problem(STANDARD_ERRORS[503]["description"]),
            },
            openapi_extra=_form_body(webhook.fields),
            summary=webhook.summary,
            tags=["subscribers"],
        )
    return router


def _form_body(fields: tuple[str, ...]) -> dict[str, Any]:
    properties = {name: {"type": "string"} for name in fields}
    form = {"schema": {"type": "object", "properties": properties}}
    return {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": form}}}


def _endpoint(kind: str, webhook: type[InboundWebhook]) -> Callable[..., Any]:
    """The endpoint of ``kind``'s inbound webhook: the form read, the webhook's answer or refusal sent back."""

    # No docstring: FastAPI would publish it as the operation's description.
    async def receive(request: Request) -> Response:
        settings = app_settings(request)
        url, api_url = request.url, settings.subscribers.api_url
        # What the provider signed is the URL it called: the public one when the API is behind a proxy.
        called = f"{api_url}{url.path}{'?' + url.query if url.query else ''}" if api_url else str(url)
        headers = {name.lower(): value for name, value in request.headers.items()}
        inbound = InboundRequest(called, headers, Form((await read_form(request)).multi_items()))
        configs = [config for config in settings.channels.values() if config.type == kind]
        try:
            body = await run_in_threadpool(webhook(configs, SubscriberInbox(settings)).receive, inbound)
        except InboundRefused as refused:
            if refused.field:
                raise validation_problem([field_problem(refused.field, "body", refused.detail)]) from None
            title = HTTPStatus(refused.status).phrase
            raise Problem(refused.status, title, refused.detail, title.lower().replace(" ", "-")) from None
        return Response(body, media_type=webhook.media_type)

    return receive
