"""What operators' tooling asks: is the process up, can it serve, and its Prometheus metrics.

GET /healthz    open    the process is up
GET /readyz     open    the database and the broker are reachable (503 and each one's state if not)
GET /metrics    open unless a token has the ``metrics`` scope, and then needs one (``metrics.py``)
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from kombu import Connection
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from broadcaster.core.errors import ConfigError
from broadcaster.interfaces.api.deps import Credentials, SettingsDep, needs
from broadcaster.interfaces.api.guard import AuthFirstRoute
from broadcaster.interfaces.api.problems import STANDARD_ERRORS
from broadcaster.settings import Settings
from broadcaster.store.db import sessions

router = APIRouter(route_class=AuthFirstRoute)


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


def readiness(settings: Settings) -> dict[str, str]:
    """Each dependency's state: ``ok`` or why not (never a secret: URLs are not echoed)."""
    checks = {"database": "ok", "broker": "ok"}
    try:
        with sessions(settings.database_url)() as session:
            session.execute(text("SELECT 1"))
    except (ConfigError, SQLAlchemyError) as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if not settings.embedded:
        try:
            with Connection(
                settings.broker_url,
                connect_timeout=2,
                transport_options={"socket_connect_timeout": 2, "socket_timeout": 2, "max_retries": 0},
            ) as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception as exc:
            checks["broker"] = f"unreachable: {type(exc).__name__}"
    return checks


@router.get("/healthz", response_model=Health, summary="The process is up", tags=["operations"])
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database or the broker is unreachable."}},
    summary="The database and the broker are reachable",
    tags=["operations"],
)
def readyz(settings: SettingsDep) -> JSONResponse:
    checks = readiness(settings)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        Health(status="ready" if ready else "unavailable", checks=checks).model_dump(),
        status_code=200 if ready else 503,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_PLAIN_0_0_4.split(";")[0]: {}}, "description": "Prometheus text format."},
        401: STANDARD_ERRORS[401],
        403: STANDARD_ERRORS[403],
        503: STANDARD_ERRORS[503],
    },
    summary="Prometheus metrics",
    tags=["operations"],
)
def metrics(request: Request, credentials: Credentials) -> Response:
    if request.app.state.metrics_protected:
        needs("metrics")(request, credentials)
    # Prometheus asks for OpenMetrics or the text format in Accept; answer in the one it prefers.
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(request.app.state.registry), headers={"Content-Type": content_type})
