"""Broadcasts: ``send`` (through the service's one write path), ``preview``, ``deliveries`` and ``retry``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

from broadcaster import service
from broadcaster.delivery.guards import describe, open_circuits
from broadcaster.domain import broadcasts
from broadcaster.domain.broadcasts import UpdateRequest, parse_request
from broadcaster.interfaces.cli.options import (
    SCOPE,
    ChannelOption,
    ComponentOption,
    ConfigOption,
    JsonOption,
    NextUpdateOption,
    ReopenOption,
    TimeoutOption,
    WaitOption,
    settings_from,
)
from broadcaster.interfaces.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    deliveries_table,
    fail,
    finish,
    out,
    print_json,
    warn_if_undispatched,
)
from broadcaster.store.models import DeliveryStatus
from broadcaster.store.queries import find_deliveries, wait_for

commands = typer.Typer()


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


@commands.command()
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
    settings = settings_from(config)
    request = update_request(incident, title, status, message, impact, component, channel, next_update, reopen)
    # Not waiting in the service: `finish` waits, showing the deliveries live on a terminal.
    submitted = service.submit(settings, request, scope=SCOPE)
    warn_if_undispatched(submitted.undispatched)
    broadcast_id = submitted.body["broadcast_id"]
    finish(settings, [broadcast_id], wait, timeout, as_json, extra={}, events=False, live=not as_json)


@commands.command()
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


@commands.command()
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


@commands.command()
def retry(
    delivery: Annotated[str | None, typer.Option("--delivery", help="A failed delivery.")] = None,
    broadcast: Annotated[str | None, typer.Option("--broadcast", help="Every failed delivery of a broadcast.")] = None,
    config: ConfigOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send failed deliveries again, with a fresh retry budget."""
    if (delivery is None) == (broadcast is None):
        fail("give exactly one of --delivery ID or --broadcast ID")
    settings = settings_from(config)
    resent = service.resend(settings, delivery_id=delivery, broadcast_id=broadcast)
    ids = resent.delivery_ids
    warn_if_undispatched(resent.undispatched)  # before waiting: with the broker away, the wait may be long
    finished = True
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
