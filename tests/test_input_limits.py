"""One set of input limits and text checks (broadcaster.limits) for every entry point.

Control characters (ESC, OSC sequences, C1), bidi overrides, too many or too long components, an incident's
accumulated components, and `subscribers import` of endless, long-lined or formula-laden files: refused with one
line naming the field, through the real command line, the real API app, the Python API and the Celery task,
with nothing sent to the sandbox and nothing written to the log.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from celery import Celery
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from broadcaster.client import Broadcaster
from broadcaster.core.errors import InputError
from broadcaster.core.limits import bounded_lines
from broadcaster.domain.broadcasts import UpdateRequest
from broadcaster.interfaces.api import create_app
from broadcaster.sandbox import Sandbox
from broadcaster.settings import load_settings
from broadcaster.store.db import session_scope, sessions
from broadcaster.store.models import Incident, Subscriber, Update
from broadcaster.testing import Result
from tests.support.input import assert_rejected, incidents, send_args

if TYPE_CHECKING:
    from tests.support.cluster import Worker

TOKEN = "limits-writer-0123456789abcdef"
API_TOKENS = {"tokens": [{"name": "ops", "token": TOKEN, "scopes": ["read", "write"]}]}
OSC_LINK = "See \x1b]8;;https://evil.example\x07here\x1b]8;;\x07 for details."
MANY = [f"c{i}" for i in range(3000)]
HUGE = "x" * 100_000

#: (fields of the update, the error after "broadcaster: error: ")
BAD_UPDATES: list[tuple[dict[str, Any], str]] = [
    ({"message": "Checkout is down\x1b[2J"}, "message: contains a control character (U+001B) at position 17"),
    ({"message": OSC_LINK}, "message: contains a control character (U+001B) at position 5"),
    ({"message": "Line one.\nLine \x1b two."}, "message: contains a control character (U+001B) at position 16 (line 2"),
    ({"message": "old Mac\rline end"}, "message: contains a carriage return (U+000D) without a newline after it"),
    ({"title": "API \u202edown"}, "title: contains a bidirectional formatting character (U+202E) at position 5"),
    ({"title": "API\u2066down"}, "title: contains a bidirectional formatting character (U+2066) at position 4"),
    ({"title": "API down\nFAKE ROW"}, "title: contains a line break (U+000A) at position 9: it must be one line"),
    ({"components": ["API", "Check\x9bout"]}, "components.1: contains a control character (U+009B) at position 6"),
    ({"channels": ["web\x1bhook"]}, "channels.0: contains a control character (U+001B) at position 4"),
    ({"components": MANY}, "components: List should have at most 100 items"),
    ({"components": [HUGE]}, "components.0: String should have at most 200 characters"),
]
IDS = ["esc", "osc", "esc-line-2", "lone-cr", "rlo", "lri", "title-newline", "c1", "channel", "3000", "100kb"]


def options(fields: dict[str, Any]) -> list[str]:
    """`send` options for an update's fields (lists repeated)."""
    base = {"title": "API down", "status": "investigating", "message": "We are looking into it."}
    args = send_args(**{k: v for k, v in {**base, **fields}.items() if isinstance(v, str)})
    for component in fields.get("components", []):
        args += ["--component", component]
    for channel in fields.get("channels", []):
        args += ["--channel", channel]
    return args


def updates(database_url: str) -> int:
    with sessions(database_url)() as session:
        return session.scalar(select(func.count()).select_from(Update)) or 0


# --- the command line ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "error"), BAD_UPDATES, ids=IDS)
def test_the_cli_refuses_bad_text_and_sizes(
    fields: dict[str, Any],
    error: str,
    cli: Callable[..., Result],
    embedded_config: Callable[..., Path],
    sandbox: Sandbox,
    database_url: str,
) -> None:
    config = embedded_config()
    before = incidents(database_url)
    result = cli(*options(fields), "--config", str(config))
    assert_rejected(result, sandbox, f"broadcaster: error: {error}")
    assert incidents(database_url) == before


def test_preview_is_checked_the_same_way(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox
) -> None:
    fields, error = BAD_UPDATES[1]
    previewed = cli("preview", *options(fields)[1:], "--config", str(embedded_config()))
    assert_rejected(previewed, sandbox, f"broadcaster: error: {error}")


def test_crlf_line_ends_are_kept_as_newlines(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox
) -> None:
    fields = {"message": "Line one.\r\nLine two.", "channels": ["webhook"]}
    result = cli(*options(fields), "--config", str(embedded_config()), "--json")
    assert result.code == 0, result.stderr
    [post] = sandbox.http.received("webhook")
    assert post.json["update"]["message"] == "Line one.\nLine two."


def test_an_incident_cannot_accumulate_more_components_than_the_cap(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox, database_url: str
) -> None:
    config = ["--config", str(embedded_config())]
    first = cli(*options({"components": MANY[:100], "channels": ["webhook"]}), *config, "--json")
    assert first.code == 0, first.stderr
    incident = first.json["incident_id"]
    assert len(sandbox.http.received("webhook")) == 1
    sandbox.reset()
    before = updates(database_url)

    more = ["send", "--incident", incident, "--status", "identified", "--message", "Found it.", "--channel", "webhook"]
    refused = cli(*more, "--component", "c100", "--component", "c5", *config)
    assert_rejected(
        refused,
        sandbox,
        f"broadcaster: error: components: incident {incident} already names 100 components and this update "
        "would add 1 more: an incident may name at most 100",
    )
    assert updates(database_url) == before
    with sessions(database_url)() as session:
        assert len(session.get(Incident, incident).components) == 100  # type: ignore[union-attr]

    # Components it already names push nothing past the cap.
    same = cli(*more, "--component", "c5", *config)
    assert same.code == 0, same.stderr
    assert len(sandbox.http.received("webhook")) == 1


def test_maintenance_and_post_mortems_are_checked_too(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox, tmp_path: Path
) -> None:
    config = ["--config", str(embedded_config())]
    window = ["maintenance", "schedule", "--starts", "+1h", "--ends", "+2h", "--channel", "webhook", *config]
    assert_rejected(
        cli(*window, "--title", "DB \x1b[5mupgrade"),
        sandbox,
        "broadcaster: error: --title: contains a control character (U+001B) at position 4",
    )
    assert_rejected(
        cli(*window, "--title", "DB upgrade", "--message", "Down for \u202e5 minutes"),
        sandbox,
        "--message: contains a bidirectional formatting character (U+202E) at position 10",
    )
    assert_rejected(cli(*window, "--title", "DB upgrade", "--component", HUGE), sandbox, "--component: 100,000")

    resolved = cli(*options({"channels": ["webhook"]}), "--status", "resolved", *config, "--json")
    assert resolved.code == 0, resolved.stderr
    sandbox.reset()
    report = tmp_path / "report.md"
    report.write_text("# What happened\n\nThe \x9b31m database failed.\n", encoding="utf-8")
    incident = resolved.json["incident_id"]
    assert_rejected(
        cli("postmortem", incident, "--file", str(report), "--channel", "webhook", *config),
        sandbox,
        "report: contains a control character (U+009B) at position 22 (line 3, column 5)",
    )


# --- subscribers import --------------------------------------------------------------------------------------


@pytest.fixture
def subscribers_config(embedded_config: Callable[..., Path], database_url: str) -> Iterator[Path]:
    """A configuration on a log without subscribers (before and after)."""

    def purge() -> None:
        with session_scope(database_url) as session:
            session.execute(delete(Subscriber))

    purge()
    yield embedded_config()
    purge()


def subscriber_count(database_url: str) -> int:
    with sessions(database_url)() as session:
        return session.scalar(select(func.count()).select_from(Subscriber)) or 0


def assert_import_refused(result: Result, error: str) -> None:
    assert result.code == 2, (result.stdout, result.stderr)
    assert result.stderr.strip().splitlines() == [f"broadcaster: error: {error}"], result.stderr


def test_importing_dev_zero_fails_fast(cli: Callable[..., Result], subscribers_config: Path, database_url: str) -> None:
    """No line end ever comes: the first line's limit stops the read (it once grew to 3.1 GB)."""
    started = time.monotonic()
    result = cli("subscribers", "import", "/dev/zero", "--config", str(subscribers_config), timeout=30)
    assert time.monotonic() - started < 15
    assert_import_refused(result, "/dev/zero: line 1 is longer than 65,536 characters, the limit for one line")
    assert subscriber_count(database_url) == 0


def test_a_long_line_or_a_large_file_imports_nothing(
    cli: Callable[..., Result], subscribers_config: Path, database_url: str, tmp_path: Path
) -> None:
    config = ["--config", str(subscribers_config)]
    long_line = tmp_path / "long.csv"
    long_line.write_text(f"email,components\nana@example.com,API\nbo@example.com,{'A' * 70_000}\n")
    assert_import_refused(
        cli("subscribers", "import", str(long_line), *config),
        f"{long_line}: line 3 is longer than 65,536 characters, the limit for one line",
    )
    large = tmp_path / "large.csv"
    with large.open("wb") as handle:  # sparse: refused by its size before a byte is read
        handle.write(b"email\nana@example.com\n")
        handle.truncate(50 * 2**20 + 1)
    assert_import_refused(
        cli("subscribers", "import", str(large), *config),
        f"{large}: larger than 52,428,800 bytes (50 MiB), the limit for one import",
    )
    assert subscriber_count(database_url) == 0


def test_a_stream_is_counted_as_it_is_read() -> None:
    """A pipe has no size to look at: its bytes are counted, and reading stops at the limit."""
    read_end, write_end = os.pipe()

    def write() -> None:
        with open(write_end, "w", encoding="utf-8") as pipe:
            pipe.write("email\n")
            try:
                for i in range(100_000):
                    pipe.write(f"user{i}@example.com\n")
            except BrokenPipeError:
                pass

    writer = threading.Thread(target=write)
    writer.start()
    lines = 0
    with open(read_end, encoding="utf-8", newline="") as handle, pytest.raises(InputError) as refused:
        for _ in bounded_lines(handle, "-", max_bytes=1000):
            lines += 1
    writer.join(timeout=10)
    assert str(refused.value) == "-: larger than 1,000 bytes (0.000953674 MiB), the limit for one import"
    assert 40 < lines < 60


FORMULAS_CSV = """\
email,phone,components
=1+1@example.com,,
ana@example.com,,"API;=HYPERLINK(""https://evil.example"",""click"")"
bo@example.com,,@SUM(A1:A9)
,+14155550100,-2+3
,+14155550101,Checkout
dee@example.com,,API
esc\x1b@example.com,,
fay@example.com,,Check\x1bout
"""


def test_formula_cells_and_control_characters_are_bad_rows(
    cli: Callable[..., Result], subscribers_config: Path, tmp_path: Path
) -> None:
    path = tmp_path / "export.csv"
    path.write_text(FORMULAS_CSV, encoding="utf-8")
    config = ["--config", str(subscribers_config)]
    result = cli("subscribers", "import", str(path), *config)
    assert result.code == 0, result.stderr
    assert [line.removeprefix(f"{path}: ") for line in result.stderr.splitlines()] == [
        "line 2: email: starts with '=', as a spreadsheet formula does: '=1+1@example.com'",
        "line 3: components: starts with '=', as a spreadsheet formula does: '=HYPERLINK(\"https://evil.example\",\"click'",
        "line 4: components: starts with '@', as a spreadsheet formula does: '@SUM(A1:A9)'",
        "line 5: components: starts with '-', as a spreadsheet formula does: '-2+3'",
        "line 8: email: contains a control character (U+001B) at position 4",
        "line 9: components: name 1 contains a control character (U+001B) at position 6",
    ]
    listed = cli("subscribers", "list", "--json", *config)
    assert {(r["email"] or r["phone"], tuple(r["components"])) for r in listed.json} == {
        ("+14155550101", ("Checkout",)),  # a phone number's + is no formula
        ("dee@example.com", ("API",)),
    }


def test_subscribers_add_names_the_control_character(cli: Callable[..., Result], subscribers_config: Path) -> None:
    result = cli(
        "subscribers",
        "add",
        "--email",
        "ana@example.com",
        "--component",
        "A\u202eB",
        "--config",
        str(subscribers_config),
    )
    assert result.code == 2 and result.stderr.strip().splitlines() == [
        "broadcaster: error: --component: name 1 contains a bidirectional formatting character (U+202E) at position 2"
    ], result.stderr


# --- the HTTP API --------------------------------------------------------------------------------------------


@pytest.fixture
def api(embedded_config: Callable[..., Path]) -> Iterator[TestClient]:
    with TestClient(create_app(load_settings(embedded_config(api=API_TOKENS)))) as client:
        yield client


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(("fields", "error"), BAD_UPDATES, ids=IDS)
def test_the_api_answers_422_naming_the_field(
    fields: dict[str, Any], error: str, api: TestClient, sandbox: Sandbox, database_url: str
) -> None:
    before = incidents(database_url)
    body = {"title": "API down", "status": "investigating", "message": "We are looking into it.", **fields}
    response = api.post("/v1/incidents", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    field, _, message = error.partition(": ")
    assert problem["errors"][0]["field"] == field
    # The API's schema may refuse first, in its own words (a length, the channel name pattern); else the text
    # checks read as on the command line.
    said = problem["errors"][0]["message"]
    assert said.startswith(message) or said.startswith(("String should", "List should")), said
    assert "\x1b" not in response.text and "\u202e" not in response.text
    assert incidents(database_url) == before
    assert sandbox.http.received() == [] and sandbox.smtp.received() == []


def test_the_api_refuses_an_update_past_the_incident_cap(api: TestClient, sandbox: Sandbox) -> None:
    body = {"title": "Many", "status": "investigating", "message": "m", "components": MANY[:100]}
    opened = api.post("/v1/incidents?wait=true", json={**body, "channels": ["webhook"]}, headers=AUTH)
    assert opened.status_code == 201, opened.text
    incident = opened.json()["incident_id"]
    update = {"status": "identified", "message": "m", "components": ["c100"], "channels": ["webhook"]}
    refused = api.post(f"/v1/incidents/{incident}/updates", json=update, headers=AUTH)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "components"
    assert "at most 100" in refused.json()["detail"]
    assert len(sandbox.http.received("webhook")) == 1


def test_the_subscribers_api_names_the_control_character(api: TestClient, database_url: str) -> None:
    response = api.post("/v1/subscribers", json={"email": "ana\x1b@example.com", "components": ["API"]}, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "email"
    assert "control character (U+001B) at position 4" in response.json()["errors"][0]["message"]


# --- the Python API and the Celery task ----------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "error"), BAD_UPDATES, ids=IDS)
def test_the_python_api_raises_input_error(
    fields: dict[str, Any],
    error: str,
    embedded_config: Callable[..., Path],
    sandbox: Sandbox,
    database_url: str,
) -> None:
    broadcaster = Broadcaster(config=embedded_config())
    before = incidents(database_url)
    arguments = {"title": "API down", "message": "We are looking into it.", **fields}
    with pytest.raises(InputError) as raised:
        broadcaster.open_incident(**arguments)
    assert str(raised.value).startswith(error)
    # A request built without validation is checked when it is broadcast.
    unchecked = UpdateRequest.model_construct(status="investigating", **{"components": [], "channels": [], **arguments})
    with pytest.raises(InputError) as again:
        broadcaster.broadcast(unchecked)
    assert str(again.value).startswith(error)
    assert incidents(database_url) == before
    assert sandbox.http.received() == [] and sandbox.smtp.received() == []


def test_the_task_drops_a_payload_with_control_characters(worker: Worker, sandbox: Sandbox) -> None:
    service = Celery("some-service", broker=worker.broker_url, set_as_current=False)
    payload = {"title": "Esc", "status": "investigating", "message": "Checkout is down\x1b[2J", "channels": ["webhook"]}
    service.send_task("broadcaster.post_update", kwargs=payload)
    service.send_task("broadcaster.post_update", kwargs={**payload, "message": "ok", "components": MANY})
    service.send_task("broadcaster.post_update", kwargs={**payload, "title": "Good one", "message": "ok"})
    deadline = time.monotonic() + 30
    while not sandbox.http.received("webhook") and time.monotonic() < deadline:
        time.sleep(0.1)
    [post] = sandbox.http.received("webhook")
    assert post.json["incident"]["title"] == "Good one"
    expected = [
        "dropped: message: contains a control character (U+001B) at position 17",
        "dropped: components: List should have at most 100 items",
    ]
    while not all(e in worker.log.read_text() for e in expected) and time.monotonic() < deadline:
        time.sleep(0.1)
    log = worker.log.read_text()
    assert all(e in log for e in expected), log[-3000:]
    assert "\x1b[2J" not in log
    time.sleep(0.3)
    assert len(sandbox.http.received("webhook")) == 1
    service.close()
