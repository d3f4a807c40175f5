"""What the commands print, and how they end: plain cells, tables or tab-separated lines, JSON, exit codes.

Exit codes (the contract's, for every command): 0 success; 1 at least one delivery failed; 2 bad input or
configuration, nothing sent; 3 ``--wait`` timed out with deliveries still pending. Tables go only to a terminal;
elsewhere each row is one tab-separated line, so scripts read the same columns.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from broadcaster import service
from broadcaster.settings import Settings
from broadcaster.store.queries import broadcast_summary, wait_for

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_TIMEOUT = 0, 1, 2, 3

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

#: the colour of a delivery's status cell
STATUS_COLOURS = {"delivered": "green", "failed": "red", "retrying": "yellow"}
DELIVERY_COLUMNS = ("id", "channel", "type", "target", "status", "attempts", "provider_id", "error")


def fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    """One line on stderr, then exit (bad input by default)."""
    err.print(f"broadcaster: error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    err.print(f"broadcaster: warning: {message}", markup=False, soft_wrap=True)


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


def short_time(iso: str | None) -> str:
    """An ISO 8601 time to the minute, as people read it: ``2026-05-01 14:30 UTC`` (empty for none)."""
    return iso[:16].replace("T", " ") + " UTC" if iso else ""


def print_lines(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """One tab-separated line per row (an empty cell for none)."""
    sys.stdout.writelines("\t".join("" if row[c] is None else str(row[c]) for c in columns) + "\n" for row in rows)


def print_rows(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    title: str | None = None,
    colours: Mapping[str, str] | None = None,
) -> None:
    """A table of plain cells on a terminal, its ``status`` cells coloured by ``colours`` (else cyan); one
    tab-separated line per row otherwise."""
    if not out.is_terminal:
        print_lines(rows, columns)
        return
    table = plain_table(title, columns)
    for row in rows:
        cells = [plain(row[c]) for c in columns]
        if colours is not None and "status" in columns:
            status = str(row["status"])
            cells[list(columns).index("status")] = plain(status, colours.get(status, "cyan"))
        table.add_row(*cells)
    out.print(table)


def deliveries_table(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> None:
    """Deliveries, as a table on a terminal; one plain tab-separated line per delivery otherwise."""
    print_rows(rows, DELIVERY_COLUMNS, title, STATUS_COLOURS)


def watch(settings: Settings, broadcasts: str | Sequence[str], timeout: float | None, live: bool) -> bool:
    """Wait for broadcasts to finish, showing their deliveries as they change on a terminal."""
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


def progress_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    columns = ("channel", "target", "status", "attempts", "error")
    table = plain_table("delivering…", columns)
    for row in rows:
        table.add_row(*[plain(row[c]) for c in columns])
    return table


def warn_if_undispatched(undispatched: int) -> None:
    """Say so when the broker did not take the deliveries just recorded (the sweeper sends them later)."""
    if undispatched:
        warn(
            f"the broker is unreachable; {undispatched} deliveries are recorded as pending "
            "and will be sent once it is back"
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
    wait = wait or settings.embedded
    finished = watch(settings, broadcast_ids, timeout, live) if wait and broadcast_ids else True
    summaries = [broadcast_summary(settings, b) for b in broadcast_ids]
    if events:
        named = service.broadcast_events(settings, list(broadcast_ids))
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
