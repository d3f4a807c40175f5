"""The options that several commands share, as ``Annotated`` types, and reading ``--config``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from broadcaster.settings import CONFIG_ENV, Settings, load_settings

#: the idempotency scope of the command line's broadcasts (the API's are its tokens' names)
SCOPE = "cli"
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


def settings_from(config: Path | None) -> Settings:
    """The configuration in force for this command (``--config``, else the environment's or ./broadcaster.toml)."""
    if config is not None:
        # Worker threads and the Celery app read the same file as this command.
        os.environ[CONFIG_ENV] = str(config)
    return load_settings(config)
