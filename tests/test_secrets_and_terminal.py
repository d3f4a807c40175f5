"""Credentials in URLs never reach a reader, stored text is never Rich markup on a terminal, the SQLite log is
the owner's only, and the dependency floors exclude versions with published CVEs.

Everything runs the real CLI (on a real pseudo-terminal where a terminal matters) against the sandbox.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import pty
import select
import sqlite3
import stat
import struct
import subprocess
import sys
import termios
import time
import tomllib
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from packaging.requirements import Requirement
from packaging.version import Version
from pydantic import SecretStr
from sqlalchemy import create_engine, inspect, text

from broadcaster.interfaces.api import create_app
from broadcaster.sandbox import Answer, Sandbox
from broadcaster.settings import ApiSettings, ApiToken, load_settings
from broadcaster.store.db import normalise_url
from broadcaster.testing import Result, free_port, write_config

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "hunter2-pass-0xC0FFEE"
TOKEN = "SECRET-access-token-4242"
READER = "reader-token-0123456789abcdef"
SEND = ("send", "--status", "investigating", "--message", "Payments fail for some customers.")
#: stored text that Rich would read as markup: a closing tag with nothing open, and a terminal hyperlink
MARKUP = "[/] markup"
LINK = "[link=https://evil.example]click[/link]"
OSC8 = "\x1b]8;"


# --- 1. credentials in URLs ---------------------------------------------------------------------------------


def with_credentials(url: str, user: str = "blog-user") -> str:
    """``url`` with ``user:PASSWORD@`` in its authority and ``?access_token=TOKEN`` as its query."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}:{PASSWORD}@{rest}?access_token={TOKEN}&lang=en"


@pytest.fixture
def credential_config(embedded_config: Callable[..., Path], sandbox: Sandbox) -> Path:
    """Credentials in the URLs of two webhook channels (the sandbox's blog, and a port nobody listens on) and in
    the ``api_base_url`` of an SMS channel on that port (Twilio's SDK then fails quoting its API root)."""
    blog = sandbox.channel_config("webhook", "blog")
    nowhere = f"http://127.0.0.1:{free_port()}"
    once = {"max_attempts": 1}
    sms = {**sandbox.channel_config("sms", "sms"), "recipients": ["+14155550100"], "retry": once}
    return embedded_config(
        channels={
            "blog": {**blog, "url": with_credentials(blog["url"])},
            "down": {**blog, "url": with_credentials(f"{nowhere}/blog/down"), "retry": once},
            "sms": {**sms, "api_base_url": with_credentials(nowhere, user="AC-api-user")},
        }
    )


def assert_clean(where: str, value: Any) -> None:
    shown = str(value)
    for secret in (PASSWORD, TOKEN):
        assert secret not in shown, f"{where} shows a credential: {shown[:2000]}"


def every_stored_text(database_url: str, tables: tuple[str, ...]) -> list[str]:
    """Every value of every column of these tables, as text (JSON columns included)."""
    engine = create_engine(normalise_url(database_url))
    try:
        with engine.connect() as connection:
            found = []
            for table in tables:
                columns = [c["name"] for c in inspect(connection).get_columns(table)]
                for row in connection.execute(text(f"SELECT {', '.join(columns)} FROM {table}")):
                    found += [f"{table}.{column}={value}" for column, value in zip(columns, row, strict=True)]
            return found
    finally:
        engine.dispose()


def test_credentials_in_urls_are_used_but_never_shown_or_stored(
    cli: Callable[..., Result], credential_config: Path, sandbox: Sandbox, database_url: str
) -> None:
    blog_url = sandbox.channel_config("webhook", "blog")["url"]
    sandbox.http.script("webhook", *[Answer(500, {"error": "blog is restarting"})] * 3)

    sent = cli(*SEND, "--title", "Checkout is failing", "--config", str(credential_config), "--json")

    assert sent.code == 1, sent.stderr
    for name, stream in (("send stdout", sent.stdout), ("send stderr", sent.stderr)):
        assert_clean(name, stream)
    deliveries = {d["channel"]: d for d in sent.json["deliveries"]}
    assert deliveries["blog"]["target"] == blog_url
    assert deliveries["blog"]["error"].startswith(f"{blog_url} answered HTTP 500")
    assert deliveries["down"]["target"].startswith("http://127.0.0.1:")
    assert "cannot reach http://127.0.0.1:" in deliveries["down"]["error"]
    assert "cannot reach Twilio" in deliveries["sms"]["error"]
    assert {d["status"] for d in deliveries.values()} == {"failed"}

    # The credentials were still sent: the blog got the password (Basic auth) and the token (query).
    received = sandbox.http.received("webhook")
    assert len(received) == 3
    for request in received:
        assert request.params == {"access_token": TOKEN, "lang": "en"}
        assert request.header("authorization") == "Basic " + base64.b64encode(f"blog-user:{PASSWORD}".encode()).decode()
        assert request.header("webhook-signature")

    # This broadcast's deliveries: on PostgreSQL the log is shared with other tests.
    listed = cli("deliveries", "--broadcast", sent.json["broadcast_id"], "--config", str(credential_config), "--json")
    assert listed.code == 0, listed.stderr
    assert_clean("deliveries --json", listed.stdout)
    assert len(listed.json) == 3

    # The check posts a signed ping to each webhook (one is answered 500, the other refused) and asks Twilio.
    sandbox.http.script("webhook", Answer(500, {"error": "still restarting"}))
    checked = cli("check", "--config", str(credential_config))
    assert checked.code == 1
    assert_clean("check stdout", checked.stdout)
    assert_clean("check stderr", checked.stderr)
    assert f"{blog_url} answered HTTP 500" in checked.stdout
    assert "cannot reach http://127.0.0.1:" in checked.stdout
    assert "sms (sms): not ready: cannot reach Twilio" in checked.stdout
    assert len(sandbox.http.received("webhook")) == 4

    stored = every_stored_text(database_url, ("deliveries", "attempts", "broadcasts"))
    assert any(blog_url in value for value in stored)
    for value in stored:
        assert_clean("the database", value)

    settings = load_settings(credential_config).model_copy(
        update={"api": ApiSettings(tokens=[ApiToken(name="dashboard", token=SecretStr(READER), scopes=["read"])])}
    )
    with TestClient(create_app(settings)) as api:
        answer = api.get("/v1/deliveries", headers={"Authorization": f"Bearer {READER}"})
    assert answer.status_code == 200, answer.text
    assert_clean("GET /v1/deliveries", answer.text)
    assert blog_url in answer.text


def test_check_shows_a_ready_webhook_without_its_credentials(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox
) -> None:
    blog = sandbox.channel_config("webhook", "blog")
    config = embedded_config(channels={"blog": {**blog, "url": with_credentials(blog["url"])}})

    checked = cli("check", "--config", str(config))

    assert checked.code == 0, checked.stdout + checked.stderr
    assert f"{blog['url']} accepted a signed ping" in checked.stdout
    assert_clean("check", checked.stdout + checked.stderr)
    assert sandbox.http.received("webhook")[0].params["access_token"] == TOKEN


# --- 2. stored text is plain text on a terminal -------------------------------------------------------------


def on_terminal(*args: str, cwd: Path | None = None, timeout: float = 90) -> Result:
    """Run ``broadcaster`` with its standard streams on a real pseudo-terminal (250 columns, colours on),
    as a person at a terminal would; return its exit code and everything it wrote there."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE")}
    env.update({"TERM": "xterm-256color", "COLUMNS": "250", "LINES": "50"})
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "broadcaster", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        cwd=cwd,
        close_fds=True,
    )
    os.close(follower)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the program closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        code = process.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
    return Result(code, output.decode(errors="replace"), "")


def assert_plain(result: Result, *expected: str) -> None:
    """Exit 0, each text shown as written, and no terminal hyperlink made of any of it."""
    assert result.code == 0, result.stdout[-3000:]
    assert "MarkupError" not in result.stdout and "internal error" not in result.stdout, result.stdout[-3000:]
    for literal in expected:
        assert literal in result.stdout, f"{literal!r} not shown: {result.stdout[-3000:]}"
    assert OSC8 not in result.stdout


@pytest.fixture
def markup_config(sandbox: Sandbox, tmp_path: Path) -> Path:
    """Embedded mode on a SQLite log of its own: what a terminal shows does not depend on the backend."""
    return write_config(
        tmp_path / "broadcaster.toml",
        {
            "broker_url": "",
            "database_url": f"sqlite:///{tmp_path / 'broadcaster.db'}",
            "retry": {"max_attempts": 3, "backoff": "100ms", "backoff_max": "400ms"},
            "channels": {"webhook": sandbox.channel_config("webhook", "webhook")},
        },
    )


def test_the_terminal_is_a_real_one() -> None:
    probe = on_terminal("--help")
    assert probe.code == 0
    # Rich saw a terminal: colours and box-drawing characters in typer's help.
    assert "\x1b[" in probe.stdout and "─" in probe.stdout


def test_stored_markup_is_shown_as_written_on_a_terminal(markup_config: Path, sandbox: Sandbox) -> None:
    from broadcaster.client import list_incidents
    from broadcaster.domain.subscribers import add_subscriber
    from broadcaster.store.models import Kind

    config = ("--config", str(markup_config))
    title = f"{MARKUP} {LINK}"
    sandbox.http.script("webhook", Answer(200, {"ok": True}, headers={"x-request-id": f"{MARKUP} {LINK}"}))

    # Delivered, and the provider's request id in the table: exit 0, not a MarkupError after delivering.
    assert_plain(on_terminal(*SEND, "--title", title, *config), MARKUP, LINK)

    settings = load_settings(markup_config)
    incident_id = list_incidents(settings)[0].id
    assert_plain(on_terminal("incidents", *config), MARKUP, LINK)
    assert_plain(on_terminal("incident", incident_id, *config), MARKUP, LINK)
    assert_plain(on_terminal("deliveries", *config), MARKUP, LINK)

    add_subscriber(settings, Kind.email, "reader@example.com", [title])
    assert_plain(on_terminal("subscribers", "list", *config), MARKUP, LINK)

    scheduled = on_terminal(
        "maintenance", "schedule", "--title", title, "--starts", "+1h", "--ends", "+2h", "--channel", "webhook", *config
    )
    assert_plain(scheduled)
    assert_plain(on_terminal("maintenance", "list", *config), MARKUP, LINK)


def test_a_retried_deliverys_markup_is_shown_as_written_on_a_terminal(
    markup_config: Path, sandbox: Sandbox, cli: Callable[..., Result]
) -> None:
    config = ("--config", str(markup_config))
    sandbox.http.script("webhook", *[Answer(500)] * 3)
    failed = cli(*SEND, "--title", "Checkout is failing", *config, "--json")
    assert failed.code == 1, failed.stderr
    sandbox.http.script("webhook", Answer(200, {"ok": True}, headers={"x-request-id": f"again {MARKUP} {LINK}"}))

    retried = on_terminal("retry", "--broadcast", failed.json["broadcast_id"], *config)

    assert_plain(retried, f"again {MARKUP}", LINK)


def test_the_demo_runs_on_a_terminal(markup_config: Path, tmp_path: Path) -> None:
    shown = on_terminal("demo", "--config", str(markup_config), cwd=tmp_path, timeout=120)
    assert_plain(shown, "The sandbox recorded")
    assert (tmp_path / "broadcaster-demo-requests.json").exists()


# --- 3. the SQLite file is the owner's only -----------------------------------------------------------------


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """A permissive umask for the commands run meanwhile, so only the broadcaster's own care keeps files 0600."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_sqlite_log_and_its_wal_and_shm_are_0600(
    cli: Callable[..., Result], sandbox: Sandbox, tmp_path: Path
) -> None:
    database = tmp_path / "fresh" / "broadcaster.db"
    database.parent.mkdir()
    config = write_config(
        tmp_path / "broadcaster.toml",
        {
            "broker_url": "",
            "database_url": f"sqlite:///{database}",
            "channels": {"webhook": sandbox.channel_config("webhook", "webhook")},
        },
    )
    with umask(0o022):
        first = cli(*SEND, "--title", "Checkout is failing", "--config", str(config), "--json")
        assert first.code == 0, first.stderr
        assert mode(database) == 0o600

        # While another reader holds the log open, the next send's -wal and -shm files stay to be seen.
        reader = sqlite3.connect(database)
        try:
            reader.execute("SELECT count(*) FROM deliveries").fetchone()
            second = cli(*SEND, "--incident", first.json["incident_id"], "--config", str(config), "--json")
            assert second.code == 0, second.stderr
            wal, shm = Path(f"{database}-wal"), Path(f"{database}-shm")
            assert wal.exists() and shm.exists()
            assert (mode(database), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)
        finally:
            reader.close()


def test_an_older_world_readable_log_is_made_the_owners(
    cli: Callable[..., Result], sandbox: Sandbox, tmp_path: Path
) -> None:
    database = tmp_path / "broadcaster.db"
    config = write_config(
        tmp_path / "broadcaster.toml",
        {
            "broker_url": "",
            "database_url": f"sqlite:///{database}",
            "channels": {"webhook": sandbox.channel_config("webhook", "webhook")},
        },
    )
    with umask(0o022):
        assert cli(*SEND, "--title", "First", "--config", str(config)).code == 0
        database.chmod(0o644)
        assert cli("deliveries", "--config", str(config)).code == 0
    assert mode(database) == 0o600


# --- 4. dependency floors -----------------------------------------------------------------------------------

#: the first version fixing each package's published CVEs (see the comments in pyproject.toml)
FIXED = {
    "jinja2": "3.1.6",  # CVE-2025-27516
    "requests": "2.32.4",  # CVE-2024-47081
    "urllib3": "2.5.0",  # CVE-2025-50181
    "starlette": "0.47.2",  # CVE-2025-54121
    "h11": "0.16.0",  # CVE-2025-43859
}


def test_dependency_floors_exclude_versions_with_published_cves() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements = {Requirement(d).name.lower(): Requirement(d) for d in declared}
    for name, fixed in FIXED.items():
        assert name in requirements, f"{name} has no floor of its own in pyproject.toml"
        specifier = requirements[name].specifier
        before = Version(fixed).release
        patched_before = Version(".".join(map(str, (*before[:-1], before[-1] - 1)))) if before[-1] else None
        if patched_before is not None:
            assert not specifier.contains(patched_before), f"{name} {specifier} admits {patched_before}"
        installed = metadata.version(name)
        assert specifier.contains(installed), f"the installed {name} {installed} is below {specifier}"
