"""The ``broadcaster`` command line. Exit codes: 0 ok, 1 a delivery failed, 2 bad input, 3 --wait timed out."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from broadcaster.errors import BroadcasterError
from broadcaster.settings import CONFIG_ENV, Settings, load_settings

if TYPE_CHECKING:
    from broadcaster.broadcasts import UpdateRequest

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_TIMEOUT = 0, 1, 2, 3
#: click's usage errors (typer bundles its own copy of click, so take the class from typer's public BadParameter)
BadUsage: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

app = typer.Typer(
    name="broadcaster",
    help="Write one incident update; deliver it to every channel, with retries and a durable delivery log.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML configuration file (else $BROADCASTER_CONFIG or ./broadcaster.toml)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
WaitOption = Annotated[bool, typer.Option("--wait", help="Wait until every delivery has finished.")]
TimeoutOption = Annotated[float | None, typer.Option("--timeout", help="Seconds --wait waits at most.", min=0)]
ComponentOption = Annotated[list[str] | None, typer.Option("--component", help="An affected component.")]
ChannelOption = Annotated[list[str] | None, typer.Option("--channel", help="Send only here (repeat).")]
NextUpdateOption = Annotated[
    str | None,
    typer.Option(
        "--next-update",
        help="When the next update is promised: a duration from now (45m) or a time (2026-05-01T14:30Z). "
        "Default: the impact's [reminders] after.",
    ),
]
ReopenOption = Annotated[bool, typer.Option("--reopen", help="Reopen a resolved incident with this update.")]


def fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    err.print(f"broadcaster: error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_from(config: Path | None) -> Settings:
    if config is not None:
        # Worker threads and the Celery app read the same file as this command.
        os.environ[CONFIG_ENV] = str(config)
    return load_settings(config)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def plain(value: Any, style: str = "") -> Text:
    """A table cell or title that is shown as it is: stored text (a title, a provider's request id, an error)
    is never read as Rich markup, so ``[/]`` cannot break a command and ``[link=...]`` makes no link."""
    return Text("" if value is None else str(value), style=style)


def plain_table(title: str | None, columns: Sequence[str]) -> Table:
    """An empty table whose title and column headers are plain text (add rows of ``plain`` cells)."""
    table = Table(title=plain(title) if title is not None else None, title_justify="left")
    for column in columns:
        table.add_column(plain(column.replace("_", " ")), overflow="fold")
    return table


#: the colour of a status cell
STATUS_COLOURS = {"delivered": "green", "failed": "red", "retrying": "yellow"}


def deliveries_table(rows: Sequence[dict[str, Any]], title: str | None = None) -> None:
    """A table on a terminal; one plain tab-separated line per delivery otherwise."""
    columns = ["id", "channel", "type", "target", "status", "attempts", "provider_id", "error"]
    if not out.is_terminal:
        for row in rows:
            sys.stdout.write("\t".join("" if row[c] is None else str(row[c]) for c in columns) + "\n")
        return
    table = plain_table(title, columns)
    for row in rows:
        status = str(row["status"])
        cells = [plain(row[c]) for c in columns]
        cells[4] = plain(status, STATUS_COLOURS.get(status, "cyan"))
        table.add_row(*cells)
    out.print(table)


def watch(settings: Settings, broadcasts: str | Sequence[str], timeout: float | None, live: bool) -> bool:
    """Wait for broadcasts to finish, showing their deliveries as they change on a terminal."""
    from rich.live import Live

    from broadcaster.queries import broadcast_summary, wait_for

    ids = [broadcasts] if isinstance(broadcasts, str) else list(broadcasts)
    if not (live and out.is_terminal):
        return wait_for(settings, ids, timeout)
    with Live(console=out, refresh_per_second=8, transient=True) as screen:
        while True:
            finished = wait_for(settings, ids, 0.25 if timeout is None else min(0.25, timeout))
            rows = [row for b in ids for row in broadcast_summary(settings, b)["deliveries"]]
            screen.update(progress_table(rows))
            if timeout is not None:
                timeout -= 0.25
            if finished or (timeout is not None and timeout <= 0):
                return finished


def progress_table(rows: Sequence[dict[str, Any]]) -> Table:
    columns = ("channel", "target", "status", "attempts", "error")
    table = plain_table("delivering…", columns)
    for row in rows:
        table.add_row(*[plain(row[c]) for c in columns])
    return table


def update_request(
    incident: str | None,
    title: str | None,
    status: str,
    message: str,
    impact: str | None,
    components: list[str] | None,
    channels: list[str] | None,
    next_update: str | None = None,
    reopen: bool = False,
) -> UpdateRequest:
    """The options of `send` and `preview`, validated (bad input: one line, exit 2)."""
    from broadcaster.broadcasts import parse_request

    fields: dict[str, Any] = {
        "incident_id": incident,
        "title": title,
        "status": status,
        "message": message,
        "impact": impact,
    }
    if next_update is not None:
        # A duration ("45m") is a time from now; anything else must be an ISO 8601 time.
        key = "next_update_in" if next_update.strip()[-1:].isalpha() and ":" not in next_update else "next_update_by"
        fields[key] = next_update.strip()
    fields["reopen"] = reopen
    return parse_request({**fields, "components": components or [], "channels": channels or []})


def warn_if_undispatched(dispatched: bool, count: int) -> None:
    if not dispatched:
        err.print(
            f"broadcaster: warning: the broker is unreachable; {count} deliveries are recorded as pending "
            "and will be sent once it is back",
            markup=False,
            soft_wrap=True,
        )


def finish(
    settings: Settings,
    broadcast_ids: Sequence[str],
    wait: bool,
    timeout: float | None,
    as_json: bool,
    *,
    extra: dict[str, Any] | None = None,
    events: bool = True,
    message: str | None = None,
    empty: str = "",
    live: bool = False,
) -> NoReturn:
    """Wait (when asked; always in embedded mode), print the broadcasts' summaries and exit with the contract's code.

    ``--json`` prints the list of summaries, or with ``extra`` one object: ``extra`` and the first summary.
    ``events`` names each broadcast's event (a reminder, a maintenance step...) in its summary and title.
    """
    from broadcaster.queries import broadcast_summary

    wait = wait or settings.embedded
    finished = watch(settings, broadcast_ids, timeout, live) if wait and broadcast_ids else True
    summaries = [broadcast_summary(settings, b) for b in broadcast_ids]
    if events:
        from sqlalchemy import select

        from broadcaster.db import sessions
        from broadcaster.models import Broadcast

        with sessions(settings.database_url)() as session:
            query = select(Broadcast.id, Broadcast.event).where(Broadcast.id.in_(broadcast_ids))
            named = {broadcast_id: event for broadcast_id, event in session.execute(query)}
        summaries = [{**s, "event": named.get(s["broadcast_id"])} for s in summaries]
    if as_json:
        print_json({**extra, **(summaries[0] if summaries else {})} if extra is not None else summaries)
    else:
        if message:
            out.print(message, markup=False, highlight=False, soft_wrap=True)
        if not summaries and empty:
            out.print(empty, markup=False)
        for summary in summaries:
            title = f"broadcast {summary['broadcast_id']}"
            if events:
                title = f"{summary['event']} for incident {summary['incident_id']}: {title}"
            deliveries_table(summary["deliveries"], title=f"{title}: {summary['status']}")
    if any(s["status"] == "failed" for s in summaries):
        raise typer.Exit(EXIT_FAILED)
    raise typer.Exit(EXIT_OK if finished else EXIT_TIMEOUT)


@app.command()
def send(
    status: Annotated[str, typer.Option("--status", help="investigating | identified | monitoring | resolved")],
    message: Annotated[str, typer.Option("--message", help="The update's text.")],
    incident: Annotated[str | None, typer.Option("--incident", help="Update this incident.")] = None,
    title: Annotated[str | None, typer.Option("--title", help="Open a new incident with this title.")] = None,
    impact: Annotated[str | None, typer.Option("--impact", help="none | minor | major | critical")] = None,
    component: ComponentOption = None,
    channel: ChannelOption = None,
    next_update: NextUpdateOption = None,
    reopen: ReopenOption = False,
    config: ConfigOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record an update (opening an incident without --incident) and broadcast it."""
    from broadcaster.broadcasts import create_broadcast
    from broadcaster.worker import dispatch

    settings = settings_from(config)
    request = update_request(incident, title, status, message, impact, component, channel, next_update, reopen)
    broadcast_id, delivery_ids = create_broadcast(settings, request)
    warn_if_undispatched(dispatch(settings, delivery_ids), len(delivery_ids))
    finish(settings, [broadcast_id], wait, timeout, as_json, extra={}, events=False, live=not as_json)


@app.command()
def preview(
    status: Annotated[str, typer.Option("--status")],
    message: Annotated[str, typer.Option("--message")],
    incident: Annotated[str | None, typer.Option("--incident")] = None,
    title: Annotated[str | None, typer.Option("--title")] = None,
    impact: Annotated[str | None, typer.Option("--impact")] = None,
    component: Annotated[list[str] | None, typer.Option("--component")] = None,
    channel: Annotated[list[str] | None, typer.Option("--channel")] = None,
    next_update: NextUpdateOption = None,
    reopen: ReopenOption = False,
    config: ConfigOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print what each channel would send, with its size and warnings; send nothing."""
    from broadcaster import broadcasts

    settings = settings_from(config)
    request = update_request(incident, title, status, message, impact, component, channel, next_update, reopen)
    messages = broadcasts.preview(settings, request)
    if as_json:
        print_json({name: m.model_dump(mode="json") for name, m in messages.items()})
        return
    for name, rendered in messages.items():
        kind = settings.channels[name].type
        out.rule(f"{name} ({kind})", style="bold")
        for part, text in rendered.parts.items():
            out.print(f"[bold]{part}[/]:", highlight=False)
            out.print(text, markup=False, highlight=False)
        sizes = ", ".join(f"{k}: {v}" for k, v in rendered.size.items())
        if sizes:
            out.print(Text.assemble(("size", "dim"), " ", sizes))
        for warning in rendered.warnings:
            out.print(Text.assemble(("warning:", "yellow"), " ", warning))


@app.command()
def deliveries(
    incident: Annotated[str | None, typer.Option("--incident")] = None,
    broadcast: Annotated[str | None, typer.Option("--broadcast")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="pending | sending | retrying | delivered | failed")
    ] = None,
    channel: Annotated[str | None, typer.Option("--channel")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List deliveries from the log (failed ones with their reasons: the dead letters)."""
    from broadcaster.guards import describe, open_circuits
    from broadcaster.models import DeliveryStatus
    from broadcaster.queries import find_deliveries

    if status is not None and status not in DeliveryStatus.__members__:
        fail(f"--status must be one of {', '.join(DeliveryStatus.__members__)}, not {status!r}")
    settings = settings_from(config)
    rows = find_deliveries(settings, incident=incident, broadcast=broadcast, status=status, channel=channel)
    if as_json:
        print_json(rows)
        return
    deliveries_table(rows)
    for circuit in open_circuits(settings):
        out.print(
            f"circuit open: {circuit.channel} after {circuit.failures} failures in a row; "
            f"its deliveries wait until {describe(circuit)['open_until']} UTC",
            markup=False,
        )


@app.command()
def retry(
    delivery: Annotated[str | None, typer.Option("--delivery", help="A failed delivery.")] = None,
    broadcast: Annotated[str | None, typer.Option("--broadcast", help="Every failed delivery of a broadcast.")] = None,
    config: ConfigOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send failed deliveries again, with a fresh retry budget."""
    from broadcaster.broadcasts import retry_failed
    from broadcaster.queries import find_deliveries, wait_for
    from broadcaster.worker import dispatch

    if (delivery is None) == (broadcast is None):
        fail("give exactly one of --delivery ID or --broadcast ID")
    settings = settings_from(config)
    finished = True
    ids = retry_failed(settings, delivery_id=delivery, broadcast_id=broadcast)
    warn_if_undispatched(dispatch(settings, ids), len(ids))
    if ids and (wait or settings.embedded):
        broadcast_ids = {row["broadcast_id"] for row in find_deliveries(settings, ids=ids)}
        finished = wait_for(settings, sorted(broadcast_ids), timeout)
    rows = find_deliveries(settings, ids=ids) if ids else []
    if as_json:
        print_json(rows)
    elif not ids:
        out.print("no failed deliveries to send again")
    else:
        deliveries_table(rows)
    if any(row["status"] == "failed" for row in rows):
        raise typer.Exit(EXIT_FAILED)
    raise typer.Exit(EXIT_OK if finished else EXIT_TIMEOUT)


@app.command()
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
    from broadcaster.worker import app as celery_app
    from broadcaster.worker import use_settings

    use_settings(settings)
    argv = ["worker", f"--loglevel={loglevel}"]
    if beat:
        argv.append("--beat")
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    celery_app.worker_main(argv)


@app.command()
def api(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on (0.0.0.0: every one).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    config: ConfigOption = None,
) -> None:
    """Serve the HTTP API: incidents, updates, broadcasts, deliveries, /healthz, /readyz, /metrics."""
    from broadcaster.api import serve

    serve(settings_from(config), host=host, port=port)


@app.command()
def check(config: ConfigOption = None) -> None:
    """Check each configured channel's credentials and reachability without posting anything customers see.

    One line per channel: NAME (TYPE): ready: WHAT, or NAME (TYPE): not ready: WHY. Exit 0 only when all are ready.
    """
    from broadcaster.broadcasts import build_channel
    from broadcaster.delivery import redact
    from broadcaster.errors import DeliveryError
    from broadcaster.guards import describe, open_circuits

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


@app.command()
def secret() -> None:
    """Print a new Standard Webhooks signing secret (whsec_...) for a webhook channel."""
    from channels.webhook import new_secret

    sys.stdout.write(new_secret() + "\n")


@app.command()
def demo(
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a whole broadcast against local provider emulators: no account, no network, no Redis."""
    from broadcaster.demo import run_demo

    raise typer.Exit(run_demo(settings_from(config), out, as_json))


def _register_commands() -> None:
    from broadcaster import cli_lifecycle, cli_subscribers

    cli_lifecycle.register(app)
    cli_subscribers.register(app)


_register_commands()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: every error is one line on stderr with the contract's exit code."""
    try:
        result = app(args=list(argv) if argv is not None else None, standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        err.print("broadcaster: aborted")
        return 130
    except BadUsage as exc:
        err.print(f"broadcaster: error: {exc.format_message()}", markup=False, soft_wrap=True)
        return EXIT_INPUT
    except BroadcasterError as exc:
        err.print(f"broadcaster: error: {exc}", markup=False, soft_wrap=True)
        return EXIT_INPUT
    except Exception as exc:
        if os.environ.get("BROADCASTER_DEBUG"):
            raise
        first_line = (str(exc).strip().splitlines() or [""])[0]
        err.print(
            f"broadcaster: internal error: {type(exc).__name__}: {first_line} (BROADCASTER_DEBUG=1 shows the traceback)",
            markup=False,
            soft_wrap=True,
        )
        return EXIT_FAILED
    return result if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
