"""`broadcaster subscribers ...`: add, import, list and remove subscribers.

    broadcaster subscribers add (--email ADDR | --phone NUMBER) [--component NAME]... [--resubscribe] [--json]
    broadcaster subscribers import FILE.csv [--json]
    broadcaster subscribers list [--json] [--quarantined | --status STATUS] [--component NAME]
    broadcaster subscribers remove (--email ADDR | --phone NUMBER) [--json]

Every command takes ``--config FILE``; bad input is one line on stderr and exit 2. An import reports each
bad row on stderr by its line number, skips it and keeps the good rows (exit 0).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from broadcaster.core import limits
from broadcaster.core.limits import bounded_lines
from broadcaster.domain.subscriber_import import import_subscribers
from broadcaster.domain.subscribers import (
    add_subscriber,
    clean_components,
    list_subscribers,
    normalise,
    remove_subscriber,
)
from broadcaster.interfaces.cli.options import ConfigOption, JsonOption, settings_from
from broadcaster.interfaces.cli.output import err, fail, print_json, print_rows, warn
from broadcaster.store.models import Kind, SubscriberStatus

subscribers = typer.Typer(
    name="subscribers",
    help='Who gets updates from channels with audience = "subscribers": add, import, list, remove.',
    no_args_is_help=True,
)
#: the colour of a subscriber's status cell
STATUS_COLOURS = {"confirmed": "green", "unsubscribed": "yellow", "quarantined": "red"}

EmailOption = Annotated[str | None, typer.Option("--email", help="An email address.")]
PhoneOption = Annotated[str | None, typer.Option("--phone", help="A phone number in E.164 (+14155550100).")]


def _address(email: str | None, phone: str | None) -> tuple[Kind, str]:
    if (email is None) == (phone is None):
        fail("give exactly one of --email ADDR or --phone NUMBER")
    kind, value = (Kind.email, email) if email is not None else (Kind.phone, phone)
    assert value is not None
    try:
        return kind, normalise(kind, value)
    except ValueError as exc:
        fail(f"--{kind}: {exc}")


def _components(followed: Sequence[str]) -> str:
    return "; ".join(followed) if followed else "all components"


@subscribers.command("add")
def add(
    email: EmailOption = None,
    phone: PhoneOption = None,
    component: Annotated[
        list[str] | None, typer.Option("--component", help="A component to follow (repeat); none: all.")
    ] = None,
    resubscribe: Annotated[
        bool, typer.Option("--resubscribe", help="Subscribe again someone who unsubscribed (at their request).")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a subscriber, or set the components a known one follows."""
    kind, address = _address(email, phone)
    try:
        components = clean_components(component or [])
    except ValueError as exc:
        fail(f"--component: {exc}")
    settings = settings_from(config)
    view, created = add_subscriber(settings, kind, address, components, resubscribe=resubscribe)
    if as_json:
        print_json(view)
    else:
        verb = "added" if created else "updated"
        sys.stdout.write(f"{verb} {address} ({view['status']}, {_components(view['components'])})\n")
    if view["status"] == "unsubscribed":
        warn(
            f"{address} unsubscribed on {view['unsubscribed_at']}; it gets nothing until it "
            "subscribes again (add --resubscribe, only at its request)"
        )


IMPORT_HELP = (
    "Import subscribers from a CSV file; bad rows are reported by line number and skipped. "
    f"A file may hold at most {limits.MAX_IMPORT_BYTES / 2**20:g} MiB and {limits.MAX_IMPORT_LINE:,} characters "
    "a line (else nothing is imported). A cell that starts with = + - or @, as a spreadsheet formula does, "
    "makes its row bad (a phone number's + is fine)."
)


@subscribers.command("import", help=IMPORT_HELP)
def import_(
    file: Annotated[Path, typer.Argument(help="CSV: a header row with email and/or phone, optional components.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import subscribers from a CSV file (see IMPORT_HELP)."""
    settings = settings_from(config)
    try:
        with file.open(encoding="utf-8-sig", newline="") as handle:
            report = import_subscribers(settings, bounded_lines(handle, str(file)))
    except FileNotFoundError:
        fail(f"{file}: no such file")
    except IsADirectoryError:
        fail(f"{file}: is a directory, not a CSV file")
    except UnicodeDecodeError as exc:
        fail(f"{file}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8")
    except OSError as exc:
        fail(f"{file}: cannot read: {exc.strerror}")
    for line, error in report.skipped:
        err.print(f"{file}: line {line}: {error}", markup=False, soft_wrap=True, highlight=False)
    if as_json:
        print_json(report.as_json())
        return
    if report.ignored_columns:
        err.print(
            f"broadcaster: note: ignored column(s) {', '.join(report.ignored_columns)}", markup=False, soft_wrap=True
        )
    skipped = f"; skipped {len(report.skipped)} bad row(s)" if report.skipped else ""
    sys.stdout.write(
        f"imported {report.created + report.updated} subscriber(s) from {file}: "
        f"{report.created} new, {report.updated} updated{skipped}\n"
    )


@subscribers.command("list")
def list_(
    quarantined: Annotated[
        bool, typer.Option("--quarantined", help="Only those quarantined after permanent failures.")
    ] = False,
    status: Annotated[str | None, typer.Option("--status", help="confirmed | unsubscribed | quarantined")] = None,
    component: Annotated[
        str | None, typer.Option("--component", help="Only those an incident on this component reaches.")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List subscribers, oldest first (one tab-separated line each, or a table on a terminal)."""
    if quarantined:
        if status not in (None, SubscriberStatus.quarantined):
            fail("--quarantined and --status name different statuses")
        status = SubscriberStatus.quarantined
    if status is not None and status not in SubscriberStatus.__members__:
        fail(f"--status must be one of {', '.join(SubscriberStatus.__members__)}, not {status!r}")
    settings = settings_from(config)
    rows = list_subscribers(settings, status=status, component=component)
    if as_json:
        print_json(rows)
        return
    columns = ["id", "address", "kind", "status", "components", "failures", "last_error"]
    lines = [
        {
            "id": row["id"],
            "address": row["email"] or row["phone"],
            "kind": "email" if row["email"] else "phone",
            "status": row["status"],
            "components": "; ".join(row["components"]) or "all",
            "failures": str(row["failures"]),
            "last_error": row["last_error"] or "",
        }
        for row in rows
    ]
    # Components and last errors are stored text: plain cells, never read as Rich markup.
    print_rows(lines, columns, f"{len(lines)} subscriber(s)", STATUS_COLOURS)


@subscribers.command("remove")
def remove(
    email: EmailOption = None,
    phone: PhoneOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a subscriber (to stop sending but remember the opt-out, let them unsubscribe instead)."""
    kind, address = _address(email, phone)
    settings = settings_from(config)
    view = remove_subscriber(settings, kind=kind, address=address)
    if as_json:
        print_json(view)
    else:
        sys.stdout.write(f"removed {address}\n")
