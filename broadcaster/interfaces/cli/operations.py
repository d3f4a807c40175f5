"""Running and checking the broadcaster: ``worker``, ``api``, ``check`` and ``secret``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.text import Text

from broadcaster.core.errors import DeliveryError
from broadcaster.delivery.guards import describe, open_circuits
from broadcaster.delivery.outcomes import redact
from broadcaster.delivery.queue import app as celery_app
from broadcaster.delivery.queue import use_settings
from broadcaster.domain.broadcasts import build_channel
from broadcaster.interfaces.cli.options import ConfigOption, settings_from
from broadcaster.interfaces.cli.output import EXIT_FAILED, EXIT_OK, fail, out
from channels.webhook import new_secret

commands = typer.Typer()


@commands.command()
def worker(
    beat: Annotated[bool, typer.Option("--beat", help="Also run the scheduler (reminders, sweeps).")] = False,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1)] = None,
    loglevel: Annotated[str, typer.Option("--loglevel")] = "INFO",
    config: ConfigOption = None,
) -> None:
    """Run a Celery worker on broker_url, Redis or RabbitMQ (the same as `celery -A broadcaster.worker worker`).

    On RabbitMQ, set redis_url too: rate limits and circuits are shared through Redis.
    """
    settings = settings_from(config)
    if settings.embedded:
        fail(
            "broker_url is empty (embedded mode): deliveries run inside `broadcaster send`; "
            "set broker_url (BROADCASTER_BROKER_URL) to run workers"
        )
    # Here, not at the top: importing them attaches the beat's schedule and the worker's signal handlers to the
    # Celery app, which only a worker process should carry (not every command that sends through the app).
    from broadcaster.worker import schedule, signals  # noqa: F401

    use_settings(settings)
    argv = ["worker", f"--loglevel={loglevel}"]
    if beat:
        argv.append("--beat")
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    celery_app.worker_main(argv)


@commands.command()
def api(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on (0.0.0.0: every one).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    config: ConfigOption = None,
) -> None:
    """Serve the HTTP API: incidents, updates, broadcasts, deliveries, /healthz, /readyz, /metrics."""
    # Here, not at the top: FastAPI, every route and uvicorn take a while to load, and only this command needs them.
    from broadcaster.interfaces.api.app import serve

    serve(settings_from(config), host=host, port=port)


@commands.command()
def check(config: ConfigOption = None) -> None:
    """Check each configured channel's credentials and reachability without posting anything customers see.

    One line per channel: NAME (TYPE): ready: WHAT, or NAME (TYPE): not ready: WHY. Exit 0 only when all are ready.
    """
    settings = settings_from(config)
    if not settings.channels:
        fail("no channels are configured")
    circuits = {c.channel: c for c in open_circuits(settings)}
    ready = True
    for name, channel_config in settings.channels.items():
        try:
            channel = build_channel(settings, name)
            try:
                verdict, ok = channel.check(), True
            finally:
                channel.close()
        except (DeliveryError, NotImplementedError) as exc:
            verdict, ok = str(exc), False
        except Exception as exc:  # an SDK's surprise is this channel's verdict; the other channels are still checked
            verdict, ok = f"the check failed: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}", False
        verdict = " ".join(redact(verdict, channel_config).split())  # one line per channel, never a secret
        if name in circuits:
            verdict += f" (circuit open until {describe(circuits[name])['open_until']} UTC)"
        ready &= ok
        line = Text(f"{name} ({channel_config.type}): ")
        line.append("ready" if ok else "not ready", style="green" if ok else "red")
        out.print(line.append(f": {verdict}"), soft_wrap=True, highlight=False)
    raise typer.Exit(EXIT_OK if ready else EXIT_FAILED)


@commands.command()
def secret() -> None:
    """Print a new Standard Webhooks signing secret (whsec_...) for a webhook channel."""
    sys.stdout.write(new_secret() + "\n")
