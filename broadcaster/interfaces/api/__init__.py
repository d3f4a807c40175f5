"""The HTTP API (``broadcaster api``): ``create_app`` builds it on a configuration.

    app.py        the app: middleware, routers, error handlers, the OpenAPI document; ``serve``
    deps.py       what routes share: the settings, tokens and scopes, common parameters, idempotent answers
    problems.py   every error answer as an RFC 9457 problem, and the 422s that name the offending fields
    guard.py      what stands in front of the routes: the body limit, the token before the body, masked logs
    metrics.py    Prometheus metrics, read from the delivery log at scrape time, and the API's own requests
    routes/       one APIRouter each: broadcasts (incidents), deliveries, subscribers, unsubscribe, inbound
                  (the channels' webhooks), operations (healthz, readyz, metrics), docs

Broadcasts and retries are written through ``broadcaster.service``; subscribers through
``broadcaster.domain.subscribers`` and ``broadcaster.domain.inbound``.
"""

from broadcaster.interfaces.api.app import app_from_environment, create_app, serve

__all__ = ["app_from_environment", "create_app", "serve"]
