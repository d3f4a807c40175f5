"""The HTTP API (``broadcaster api``): open incidents, post updates and read the delivery log, for ops tooling.

Every ``/v1`` endpoint needs ``Authorization: Bearer TOKEN`` with a token from ``[api] tokens``: scope ``read``
for GETs and previews, ``write`` for the POSTs that broadcast or retry. ``/healthz``, ``/readyz`` and the
OpenAPI document are open; ``/metrics`` is open unless a token has the ``metrics`` scope, and then needs one.
Errors are RFC 9457 problem details. POSTs take an ``Idempotency-Key`` (``broadcaster.domain.idempotency``).

Broadcasting POSTs record the update, enqueue its deliveries and answer 202 with the broadcast summary
(status ``pending``); with ``?wait=true`` they answer once every delivery has finished (201) or the timeout
ran out (202). In embedded mode (no ``broker_url``) the deliveries run on a worker thread of this process.
"""

from __future__ import annotations

import logging
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from broadcaster.interfaces.api.deps import token_table
from broadcaster.interfaces.api.guard import BodyLimit, mask_uvicorn_logs, uvicorn_log_config
from broadcaster.interfaces.api.metrics import RequestMetrics, build_registry
from broadcaster.interfaces.api.problems import as_problem_json, install_handlers
from broadcaster.interfaces.api.routes import (
    broadcasts,
    deliveries,
    docs,
    inbound,
    operations,
    subscribers,
    unsubscribe,
)
from broadcaster.settings import Settings, load_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """The API on ``settings``; raises ConfigError for an unusable ``[api]`` table."""
    app = FastAPI(
        title="Outage broadcaster",
        version="1",
        description=__doc__,
        docs_url=None,  # routes.docs: assets of pinned versions
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.tokens = token_table(settings.api)
    app.state.metrics_protected = any("metrics" in t.scopes for t in app.state.tokens)
    app.state.registry, http_metrics = build_registry(settings)
    # The body limit inside the metrics, so that its 413s are counted too.
    app.add_middleware(BodyLimit, limit=settings.api.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=http_metrics)
    install_handlers(app)
    for router in (broadcasts.router, deliveries.router, operations.router, subscribers.router, unsubscribe.router):
        app.include_router(router)
    app.include_router(inbound.webhooks_router())
    app.include_router(docs.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with every error answer declared as ``application/problem+json``."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        app.openapi_schema = as_problem_json(document)
    return app.openapi_schema


# --- running it --------------------------------------------------------------------------------------------


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API with uvicorn until interrupted (``broadcaster api``)."""
    app = create_app(settings)
    if not settings.api.tokens:
        log.warning("no [api] tokens are configured: every /v1 request will be refused with 401")
    # The access log masks the token of every link path (/unsubscribe/...): those links are credentials.
    uvicorn.run(app, host=host, port=port, proxy_headers=True, log_level="info", log_config=uvicorn_log_config())


def app_from_environment() -> FastAPI:
    """For ``uvicorn --factory broadcaster.interfaces.api:app_from_environment`` (several worker processes)."""
    mask_uvicorn_logs()  # uvicorn configured its logging already, without our filter
    return create_app(load_settings())
