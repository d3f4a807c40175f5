"""Reading the log: ``incidents`` (newest first; maintenance windows are kept out of ``--open``) and
``incident ID`` (one incident's timeline: every update and event, with what each channel got)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from broadcaster import service
from broadcaster.interfaces.cli.options import ConfigOption, JsonOption, settings_from
from broadcaster.interfaces.cli.output import out, print_json, print_rows, short_time

commands = typer.Typer()

INCIDENT_COLUMNS = ("id", "status", "impact", "title", "last_update_at", "next_update_by", "kind")


@commands.command()
def incidents(
    open_only: Annotated[
        bool, typer.Option("--open", help="Only incidents not yet resolved (no maintenance).")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 100,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List incidents, newest first, with when each was last updated and when the next update is due."""
    settings = settings_from(config)
    rows = service.incident_listing(settings, open_only, limit)
    if as_json:
        print_json(rows)
        return
    print_rows(rows, INCIDENT_COLUMNS, "open incidents" if open_only else "incidents")


@commands.command()
def incident(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="The incident's id.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an incident's timeline: every update, and every event, with what each channel got."""
    settings = settings_from(config)
    detail = service.incident_timeline(settings, incident_id)
    if as_json:
        print_json(detail)
        return
    print_timeline(detail)


def print_timeline(detail: dict[str, Any]) -> None:
    """The timeline as lines of text, updates and events in the order they happened (stored text as written)."""

    def say(text: str = "") -> None:
        out.print(text, markup=False, highlight=False, soft_wrap=True)

    components = ", ".join(detail["components"]) or "none named"
    say(f"{detail['id']}  {detail['title']}")
    say(f"{detail['status']} · impact {detail['impact']} · components: {components} · {detail['kind']}")
    say(f"opened {short_time(detail['created_at'])} · updated {short_time(detail['updated_at'])} · {detail['url']}")
    if detail["maintenance"]:
        window = detail["maintenance"]
        say(
            f"maintenance {window['id']}: {short_time(window['starts_at'])} to {short_time(window['ends_at'])}, "
            f"{window['step']}"
        )
    entries: list[tuple[str, str, list[dict[str, Any]]]] = []
    for update in detail["updates"]:
        promise = f" (next update by {short_time(update['next_update_by'])})" if update["next_update_by"] else ""
        line = f"{update['status']}: {update['message']}{promise}"
        entries.append((update["created_at"], line, update["broadcasts"]))
    for event in detail["events"]:
        entries.append((event["created_at"], event["event"], [event]))
    for when, line, broadcasts in sorted(entries, key=lambda entry: entry[0]):
        say()
        say(f"{short_time(when)}  {line}")
        for broadcast in broadcasts:
            for delivery in broadcast["deliveries"]:
                tries = f", {delivery['attempts']} attempt(s)" if delivery["attempts"] != 1 else ""
                error = f": {delivery['error']}" if delivery["error"] else ""
                say(
                    f"    {delivery['channel']} ({delivery['type']}) {delivery['target']}: "
                    f"{delivery['status']}{tries}{error}"
                )
