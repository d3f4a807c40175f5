"""Bad input on the command line: a ``send`` to vary, and the check that it was refused before anything was sent."""

from __future__ import annotations

from sqlalchemy import func, select

from broadcaster.sandbox import Sandbox
from broadcaster.store.db import sessions
from broadcaster.store.models import Incident
from broadcaster.testing import Result

GOOD = {"--title": "API down", "--status": "investigating", "--message": "We are looking into it."}


def send_args(**changes: str | None) -> list[str]:
    """``send`` with the GOOD options, each change replacing one (None: left out)."""
    options = {**GOOD, **{f"--{k}": v for k, v in changes.items()}}
    return ["send", *(x for k, v in options.items() if v is not None for x in (k, v))]


def incidents(database_url: str) -> int:
    with sessions(database_url)() as session:
        return session.scalar(select(func.count()).select_from(Incident)) or 0


def assert_rejected(result: Result, sandbox: Sandbox, *words: str) -> None:
    assert result.code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("broadcaster: error: ")
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]
    assert sandbox.http.received() == [] and sandbox.smtp.received() == []
