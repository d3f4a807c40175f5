"""Commands for the incident lifecycle: incidents, reminders, maintenance, post-mortems.

``incidents`` and ``incident ID`` read the log (maintenance windows are kept out of ``incidents --open``);
``remind`` runs one scheduler pass (reminders, holding statements, due maintenance steps) for cron in
embedded mode; ``maintenance schedule|list|complete`` handles maintenance windows; ``postmortem ID --file
REPORT.md`` publishes a resolved incident's post-mortem.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

maintenance_app = typer.Typer(
    name="maintenance",
    help="Scheduled maintenance: announced, reminded, started and completed, each step posted once.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``broadcaster`` command line."""
    app.command("incidents")(incidents)
    app.command("incident")(incident)
    app.command("remind")(remind)
    app.command("postmortem")(postmortem)
    app.add_typer(maintenance_app)


# --- incidents ---------------------------------------------------------------------------------------------


def incidents(
    open_only: Annotated[
        bool, typer.Option("--open", help="Only incidents not yet resolved (no maintenance).")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 100,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List incidents, newest first, with when each was last updated and when the next update is due."""
    from broadcaster.cli import out, print_json, settings_from

    settings = settings_from(config)
    rows = incident_rows(settings, open_only, limit)
    if as_json:
        print_json(rows)
        return
    columns = ["id", "status", "impact", "title", "last_update_at", "next_update_by", "kind"]
    if not out.is_terminal:
        for row in rows:
            sys.stdout.write("\t".join("" if row[c] is None else str(row[c]) for c in columns) + "\n")
        return
    from broadcaster.cli import plain, plain_table

    # Titles are stored text: plain cells, so "[/]" or "[link=...]" in one shows as written.
    table = plain_table("open incidents" if open_only else "incidents", columns)
    for row in rows:
        table.add_row(*[plain(row[c]) for c in columns])
    out.print(table)


def incident_rows(settings: Any, open_only: bool, limit: int) -> list[dict[str, Any]]:
    """The incidents as the API lists them, plus ``kind``, ``last_update_at`` and ``next_update_by``."""
    from sqlalchemy import select

    from broadcaster.client import list_incidents
    from broadcaster.db import sessions
    from broadcaster.lifecycle import Maintenance
    from broadcaster.models import Update

    found = list_incidents(settings, "open" if open_only else None, limit)
    ids = [i.id for i in found]
    with sessions(settings.database_url)() as session:
        maintenance = set(session.scalars(select(Maintenance.incident_id).where(Maintenance.incident_id.in_(ids))))
        latest: dict[str, Update] = {}
        query = select(Update).where(Update.incident_id.in_(ids)).order_by(Update.created_at, Update.id)
        for update in session.scalars(query):
            latest[update.incident_id] = update
    rows = []
    for view in found:
        if open_only and view.id in maintenance:
            continue
        last = latest.get(view.id)
        row = view.model_dump(mode="json")
        row["kind"] = "maintenance" if view.id in maintenance else "incident"
        row["last_update_at"] = last.created_at.isoformat() if last else None
        row["next_update_by"] = last.next_update_by.isoformat() if last and last.next_update_by else None
        rows.append(row)
    return rows


def incident(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="The incident's id.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an incident's timeline: every update, and every event, with what each channel got."""
    from broadcaster.cli import print_json, settings_from

    settings = settings_from(config)
    detail = timeline(settings, incident_id)
    if as_json:
        print_json(detail)
        return
    print_timeline(detail)


def timeline(settings: Any, incident_id: str) -> dict[str, Any]:
    """The API's incident detail, with each update's broadcasts and deliveries, and the other events."""
    from sqlalchemy import select

    from broadcaster.client import incident_detail
    from broadcaster.db import sessions
    from broadcaster.lifecycle import Maintenance
    from broadcaster.maintenance import view as maintenance_view
    from broadcaster.models import Broadcast, Update
    from broadcaster.queries import find_deliveries, overall_status

    detail = incident_detail(settings, incident_id).model_dump(mode="json")
    deliveries: dict[str, list[dict[str, Any]]] = {}
    for row in find_deliveries(settings, incident=incident_id, limit=100_000):
        deliveries.setdefault(row["broadcast_id"], []).append(row)
    with sessions(settings.database_url)() as session:
        window = session.scalar(select(Maintenance).where(Maintenance.incident_id == incident_id))
        broadcasts = list(
            session.scalars(
                select(Broadcast)
                .where(Broadcast.incident_id == incident_id)
                .order_by(Broadcast.created_at, Broadcast.id)
            )
        )
        promised = {
            u.id: u.next_update_by for u in session.scalars(select(Update).where(Update.incident_id == incident_id))
        }

    def broadcast_view(broadcast: Broadcast) -> dict[str, Any]:
        rows = [
            {k: v for k, v in d.items() if k not in ("broadcast_id", "incident_id")}
            for d in deliveries.get(broadcast.id, [])
        ]
        return {
            "broadcast_id": broadcast.id,
            "event": broadcast.event,
            "created_at": broadcast.created_at.isoformat(),
            "status": overall_status([d["status"] for d in rows]) if rows else "delivered",
            "rendered": {name: _headline(message) for name, message in broadcast.renderings.items()},
            "deliveries": rows,
        }

    by_update: dict[str, list[dict[str, Any]]] = {}
    events = []
    for broadcast in broadcasts:
        if broadcast.update_id:
            by_update.setdefault(broadcast.update_id, []).append(broadcast_view(broadcast))
        else:
            events.append(broadcast_view(broadcast))
    for update in detail["updates"]:
        when = promised.get(update["id"])
        update["next_update_by"] = when.isoformat() if when else None
        update["broadcasts"] = by_update.get(update["id"], [])
    detail["kind"] = "maintenance" if window is not None else "incident"
    detail["maintenance"] = maintenance_view(settings, window) if window is not None else None
    detail["events"] = events
    return detail


def _headline(message: dict[str, Any]) -> str:
    """The first line a channel's recipients saw: the title, subject or text."""
    parts = message.get("parts") or {}
    for key in ("title", "subject", "text", "body"):
        if parts.get(key):
            return str(parts[key]).strip().splitlines()[0]
    return ""


def print_timeline(detail: dict[str, Any]) -> None:
    from broadcaster.cli import out

    def say(text: str = "") -> None:
        out.print(text, markup=False, highlight=False, soft_wrap=True)

    components = ", ".join(detail["components"]) or "none named"
    say(f"{detail['id']}  {detail['title']}")
    say(f"{detail['status']} · impact {detail['impact']} · components: {components} · {detail['kind']}")
    say(f"opened {_short(detail['created_at'])} · updated {_short(detail['updated_at'])} · {detail['url']}")
    if detail["maintenance"]:
        window = detail["maintenance"]
        say(
            f"maintenance {window['id']}: {_short(window['starts_at'])} to {_short(window['ends_at'])}, {window['step']}"
        )
    entries: list[tuple[str, str, dict[str, Any] | None, list[dict[str, Any]]]] = []
    for update in detail["updates"]:
        promise = f" (next update by {_short(update['next_update_by'])})" if update["next_update_by"] else ""
        line = f"{update['status']}: {update['message']}{promise}"
        entries.append((update["created_at"], line, update, update["broadcasts"]))
    for event in detail["events"]:
        entries.append((event["created_at"], event["event"], None, [event]))
    for when, line, _, broadcasts in sorted(entries, key=lambda entry: entry[0]):
        say()
        say(f"{_short(when)}  {line}")
        for broadcast in broadcasts:
            for delivery in broadcast["deliveries"]:
                tries = f", {delivery['attempts']} attempt(s)" if delivery["attempts"] != 1 else ""
                error = f": {delivery['error']}" if delivery["error"] else ""
                say(
                    f"    {delivery['channel']} ({delivery['type']}) {delivery['target']}: {delivery['status']}{tries}{error}"
                )


def _short(iso: str | None) -> str:
    return iso[:16].replace("T", " ") + " UTC" if iso else ""


# --- the scheduler's pass ----------------------------------------------------------------------------------


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
    from broadcaster.cli import finish, settings_from

    settings = settings_from(config)  # before the worker module loads: it reads the same configuration
    from broadcaster import maintenance, reminders
    from broadcaster.lifecycle import parse_when

    reminders.check_channels(settings)
    when = parse_when(now, name="--now") if now else None
    waiting = wait or settings.embedded
    created = reminders.remind(settings, when)
    created += maintenance.advance(settings, when, wait=waiting, timeout=timeout if timeout is not None else 120)
    finish(settings, created, waiting, timeout, as_json, empty="nothing is due")


# --- maintenance -------------------------------------------------------------------------------------------


@maintenance_app.command("schedule")
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
    from broadcaster.cli import finish, settings_from

    settings = settings_from(config)
    from broadcaster import maintenance
    from broadcaster.errors import InputError
    from broadcaster.units import parse_duration

    try:
        before = parse_duration(remind_before) if remind_before is not None else None
    except ValueError as exc:
        raise InputError(f"--remind-before: {exc}") from None
    made = maintenance.schedule(
        settings, title, starts, ends, component or [], message, channel or [], remind_before=before
    )
    window = maintenance.view(settings, maintenance.find(settings, made.maintenance_id))
    reminder = f"; reminder at {_short(window['remind_at'])}" if window["remind_at"] else "; no reminder"
    text = (
        f"maintenance {made.maintenance_id} (incident {made.incident_id}) scheduled: "
        f"{_short(window['starts_at'])} to {_short(window['ends_at'])}{reminder}"
    )
    finish(settings, [made.broadcast_id], wait, timeout, as_json, extra={"maintenance": window}, message=text)


@maintenance_app.command("list")
def maintenance_list(
    include_all: Annotated[bool, typer.Option("--all", help="Completed windows too.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List maintenance windows that are scheduled or in progress (with --all, completed ones too)."""
    from broadcaster.cli import print_json, settings_from

    settings = settings_from(config)
    from broadcaster import maintenance

    rows = maintenance.windows(settings, include_all)
    if as_json:
        print_json(rows)
        return
    columns = ["id", "step", "starts_at", "ends_at", "remind_at", "title", "incident_id"]
    for row in rows:
        sys.stdout.write("\t".join("" if row[c] is None else str(row[c]) for c in columns) + "\n")


@maintenance_app.command("complete")
def maintenance_complete(
    ident: Annotated[str, typer.Argument(metavar="ID", help="The maintenance's id (or its incident's).")],
    config: ConfigOption = None,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """End a maintenance window now (its start is posted first if it has not been yet)."""
    from broadcaster.cli import finish, settings_from

    settings = settings_from(config)
    from broadcaster import maintenance

    created = maintenance.complete(settings, ident, timeout=timeout if timeout is not None else 120)
    window = maintenance.view(settings, maintenance.find(settings, ident))
    extra = {"maintenance": window, "broadcasts": created}
    finish(settings, created, False, timeout, as_json, extra=extra, message=f"maintenance {window['id']} completed")


# --- post-mortems ------------------------------------------------------------------------------------------


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
    from broadcaster.cli import finish, settings_from
    from broadcaster.errors import InputError
    from broadcaster.limits import MAX_REPORT
    from broadcaster.postmortem import publish

    settings = settings_from(config)
    try:
        with file.open("rb") as handle:  # a byte more than a report may hold in UTF-8: /dev/zero never ends
            raw = handle.read(4 * MAX_REPORT + 1)
        if len(raw) > 4 * MAX_REPORT:
            raise InputError(f"{file}: larger than a report may be ({MAX_REPORT:,} characters)")
        report = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{file}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{file}: cannot read: {exc.strerror}") from None
    published = publish(settings, incident_id, report, url=url, channels=channel or [])
    text = f"post-mortem of incident {incident_id} published (revision {published.revision}): {published.url}"
    extra = {"postmortem_id": published.postmortem_id, "revision": published.revision, "url": published.url}
    finish(settings, [published.broadcast_id], wait, timeout, as_json, extra=extra, message=text)


# Last: broadcaster.cli, which defines the shared options, registers this module's commands while it loads, so
# they must exist before it is imported (whichever of the two modules is imported first).
from broadcaster.cli import ChannelOption, ComponentOption, ConfigOption, JsonOption, TimeoutOption, WaitOption  # noqa: E402
