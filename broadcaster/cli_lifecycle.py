"""Commands for the incident lifecycle: incidents, reminders, maintenance, post-mortems."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``broadcaster`` command line."""
