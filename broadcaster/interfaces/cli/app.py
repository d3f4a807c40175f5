"""The ``broadcaster`` command line: the typer app with every command group, and ``main``, its entry point.

Exit codes: 0 ok, 1 a delivery failed, 2 bad input, 3 --wait timed out. Every error is one line on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import typer

from broadcaster.core.errors import BroadcasterError
from broadcaster.interfaces.cli import broadcasts, demo, incidents, lifecycle, operations, subscribers
from broadcaster.interfaces.cli.output import EXIT_FAILED, EXIT_INPUT, EXIT_OK, err

#: click's usage errors (typer bundles its own copy of click, so take the class from typer's public BadParameter)
BadUsage: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

app = typer.Typer(
    name="broadcaster",
    help="Write one incident update; deliver it to every channel, with retries and a durable delivery log.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Unnamed groups add their commands at the top level, in this order in --help.
for group in (broadcasts, operations, demo, incidents, lifecycle):
    app.add_typer(group.commands)
app.add_typer(subscribers.subscribers)


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
