"""The incident lifecycle: ``remind`` (one scheduler pass, for cron in embedded mode), ``maintenance
schedule|list|complete`` (maintenance windows) and ``postmortem ID --file REPORT.md`` (a resolved incident's
post-mortem). Each step is recorded and sent through broadcaster.service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from broadcaster import service
from broadcaster.core.errors import InputError
from broadcaster.core.limits import MAX_REPORT
from broadcaster.core.units import parse_duration
from broadcaster.domain import maintenance, reminders
from broadcaster.domain.lifecycle import parse_when
from broadcaster.interfaces.cli.options import (
    ChannelOption,
    ComponentOption,
    ConfigOption,
    JsonOption,
    TimeoutOption,
    WaitOption,
    settings_from,
)
from broadcaster.interfaces.cli.output import finish, print_json, print_lines, short_time

#: how long `remind` and `maintenance complete` wait for earlier steps still being delivered, without --timeout
STEP_TIMEOUT = 120

commands = typer.Typer()
maintenance_commands = typer.Typer(
    name="maintenance",
    help="Scheduled maintenance: announced, reminded, started and completed, each step posted once.",
    no_args_is_help=True,
)


# --- the scheduler's pass ----------------------------------------------------------------------------------


@commands.command()
def remind(
    now: Annotated[
        str | None, typer.Option("--now", help="Act as if it were this time (ISO 8601 or +DURATION): drills.")
    ] = None,
    config: ConfigOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run one scheduler pass: update reminders, holding statements and due maintenance steps (for cron).

    The beat (`broadcaster worker --beat`) runs the same pass every [reminders] check_every; running both is
    safe: each reminder and each step is sent once. In embedded mode the command runs until everything
    it sent is delivered.
    """
    settings = settings_from(config)
    reminders.check_channels(settings)
    when = parse_when(now, name="--now") if now else None
    waiting = wait or settings.embedded
    created = service.remind(settings, when)
    created += service.advance_maintenance(
        settings, when, wait=waiting, timeout=timeout if timeout is not None else STEP_TIMEOUT
    )
    finish(settings, created, waiting, timeout, as_json, empty="nothing is due")


# --- maintenance -------------------------------------------------------------------------------------------


@maintenance_commands.command("schedule")
def maintenance_schedule(
    title: Annotated[str, typer.Option("--title", help="What is being maintained, as customers read it.")],
    starts: Annotated[str, typer.Option("--starts", help="Start: ISO 8601 (no offset: UTC) or +DURATION.")],
    ends: Annotated[str, typer.Option("--ends", help="End: ISO 8601 (no offset: UTC) or +DURATION.")],
    component: ComponentOption = None,
    message: Annotated[str | None, typer.Option("--message", help="What customers should expect.")] = None,
    channel: ChannelOption = None,
    remind_before: Annotated[
        str | None, typer.Option("--remind-before", help="Remind this long before the start (default [maintenance]).")
    ] = None,
    config: ConfigOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Schedule a maintenance window and announce it; the beat reminds, starts and completes it."""
    settings = settings_from(config)
    try:
        before = parse_duration(remind_before) if remind_before is not None else None
    except ValueError as exc:
        raise InputError(f"--remind-before: {exc}") from None
    made = service.schedule_maintenance(
        settings, title, starts, ends, component or [], message, channel or [], remind_before=before
    )
    window = maintenance.view(settings, maintenance.find(settings, made.maintenance_id))
    reminder = f"; reminder at {short_time(window['remind_at'])}" if window["remind_at"] else "; no reminder"
    text = (
        f"maintenance {made.maintenance_id} (incident {made.incident_id}) scheduled: "
        f"{short_time(window['starts_at'])} to {short_time(window['ends_at'])}{reminder}"
    )
    finish(settings, [made.broadcast_id], wait, timeout, as_json, extra={"maintenance": window}, message=text)


@maintenance_commands.command("list")
def maintenance_list(
    include_all: Annotated[bool, typer.Option("--all", help="Completed windows too.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List maintenance windows that are scheduled or in progress (with --all, completed ones too)."""
    settings = settings_from(config)
    rows = maintenance.windows(settings, include_all)
    if as_json:
        print_json(rows)
        return
    print_lines(rows, ("id", "step", "starts_at", "ends_at", "remind_at", "title", "incident_id"))


@maintenance_commands.command("complete")
def maintenance_complete(
    ident: Annotated[str, typer.Argument(metavar="ID", help="The maintenance's id (or its incident's).")],
    config: ConfigOption = None,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """End a maintenance window now (its start is posted first if it has not been yet)."""
    settings = settings_from(config)
    created = service.complete_maintenance(settings, ident, timeout=timeout if timeout is not None else STEP_TIMEOUT)
    window = maintenance.view(settings, maintenance.find(settings, ident))
    extra = {"maintenance": window, "broadcasts": created}
    finish(settings, created, False, timeout, as_json, extra=extra, message=f"maintenance {window['id']} completed")


commands.add_typer(maintenance_commands)


# --- post-mortems ------------------------------------------------------------------------------------------


@commands.command()
def postmortem(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="The resolved incident's id.")],
    file: Annotated[Path, typer.Option("--file", help="The report, in Markdown.")],
    url: Annotated[
        str | None,
        typer.Option("--url", help="Where the report is read (default {public_url}/incidents/ID/postmortem)."),
    ] = None,
    channel: ChannelOption = None,
    config: ConfigOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Publish a resolved incident's post-mortem: in full on the blog webhook, a pointer on the other channels."""
    settings = settings_from(config)
    published = service.publish_postmortem(settings, incident_id, read_report(file), url=url, channels=channel or [])
    text = f"post-mortem of incident {incident_id} published (revision {published.revision}): {published.url}"
    extra = {"postmortem_id": published.postmortem_id, "revision": published.revision, "url": published.url}
    finish(settings, [published.broadcast_id], wait, timeout, as_json, extra=extra, message=text)


def read_report(file: Path) -> str:
    """The report's text; too large, not UTF-8 or unreadable: bad input."""
    try:
        with file.open("rb") as handle:  # a byte more than a report may hold in UTF-8: /dev/zero never ends
            raw = handle.read(4 * MAX_REPORT + 1)
        if len(raw) > 4 * MAX_REPORT:
            raise InputError(f"{file}: larger than a report may be ({MAX_REPORT:,} characters)")
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{file}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{file}: cannot read: {exc.strerror}") from None
