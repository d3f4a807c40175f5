"""Subscribers in the database: the `broadcaster subscribers` commands, CSV import, and /v1/subscribers.

Through the real command line (a subprocess) and the real ASGI app, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from broadcaster.interfaces.api import create_app
from broadcaster.sandbox import Sandbox
from broadcaster.settings import load_settings
from broadcaster.testing import Result
from tests.support.subscribers import READER, TOKENS, WRITER, audience_channels, listed


@pytest.fixture
def config(embedded_config: Callable[..., Path], sandbox: Sandbox, no_subscribers: None) -> Path:
    return embedded_config(channels=audience_channels(sandbox), api=TOKENS)


@pytest.fixture
def api(config: Path) -> Iterator[TestClient]:
    with TestClient(create_app(load_settings(config))) as client:
        yield client


def auth(token: str = WRITER) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("broadcaster: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# --- the command line ----------------------------------------------------------------------------------------


def test_add_list_and_remove_from_the_command_line(cli: Callable[..., Result], config: Path) -> None:
    """add creates or updates (components replaced; none = all); list shows them; remove deletes."""
    args = ("--config", str(config))
    added = cli("subscribers", "add", "--email", "Ana@Example.com", "--component", "Checkout",
                "--component", "API", *args)  # fmt: skip
    assert added.code == 0, added.stderr
    assert added.stdout == "added ana@example.com (confirmed, Checkout; API)\n"
    phone = cli("subscribers", "add", "--phone", "+14155550100", "--json", *args)
    assert phone.code == 0, phone.stderr
    assert phone.json["phone"] == "+14155550100" and phone.json["email"] is None
    assert phone.json["components"] == [] and phone.json["status"] == "confirmed"

    again = cli("subscribers", "add", "--email", "ana@example.com", "--component", "Search", *args)
    assert again.stdout == "updated ana@example.com (confirmed, Search)\n"

    rows = listed(cli, config)
    assert [(r["email"], r["phone"], r["components"]) for r in rows] == [
        ("ana@example.com", None, ["Search"]),
        (None, "+14155550100", []),
    ]
    assert set(rows[0]) >= {"id", "status", "failures", "last_error", "created_at", "updated_at"}
    plain = cli("subscribers", "list", *args)
    assert [line.split("\t")[1:5] for line in plain.stdout.splitlines()] == [
        ["ana@example.com", "email", "confirmed", "Search"],
        ["+14155550100", "phone", "confirmed", "all"],
    ]
    assert [r["email"] for r in listed(cli, config, "--component", "search")] == ["ana@example.com", None]
    assert listed(cli, config, "--component", "Checkout") == [rows[1]]  # follows all

    removed = cli("subscribers", "remove", "--email", "ANA@example.com", *args)
    assert removed.code == 0 and removed.stdout == "removed ana@example.com\n"
    assert [r["phone"] for r in listed(cli, config)] == ["+14155550100"]
    assert_one_line_error(cli("subscribers", "remove", "--email", "ana@example.com", *args), "no subscriber")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("add", "--email", "not-an-address"), "--email: not an email address"),
        (("add", "--email", "Ana <ana@example.com>"), "not an email address"),
        (("add", "--phone", "4155550100"), "E.164"),
        (("add", "--phone", "+1415555010"), "not a valid phone number"),
        (("add", "--email", "a@example.com", "--phone", "+14155550100"), "exactly one of --email"),
        (("add",), "exactly one of --email"),
        (("remove",), "exactly one of --email"),
        (("list", "--status", "happy"), "--status must be one of"),
        (("import", "missing.csv"), "no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    cli: Callable[..., Result], config: Path, args: tuple[str, ...], fragment: str
) -> None:
    assert_one_line_error(cli("subscribers", *args, "--config", str(config)), fragment)


def test_a_file_without_an_email_or_phone_column_is_bad_input(
    cli: Callable[..., Result], config: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "people.csv"
    bad.write_text("name,components\nAna,Checkout\n")
    assert_one_line_error(cli("subscribers", "import", str(bad), "--config", str(config)), "email or phone column")
    assert listed(cli, config) == []


# --- CSV import ----------------------------------------------------------------------------------------------

MIXED_CSV = """\
email,phone,components,name
ana@example.com,,Checkout;API,Ana
not-an-email,,,Bad
,+14155550100,,Phone only
,+1 415 555 0101,,Spaces
BO@example.com,+14155550102,API ; Search ,Both
ana@example.com,,,Twice
,,,
"chen@example.com
extra",,,Quoted across lines
,,Checkout,Nobody
dee@example.com,,Checkout,Dee,extra
"""


def test_import_reports_bad_rows_by_line_number_and_keeps_the_good_ones(
    cli: Callable[..., Result], config: Path, tmp_path: Path
) -> None:
    """Each bad row is one line on stderr with its line number; the good rows are all imported."""
    path = tmp_path / "subscribers.csv"
    path.write_text(MIXED_CSV)
    result = cli("subscribers", "import", str(path), "--config", str(config))
    assert result.code == 0, result.stderr
    assert result.stdout == f"imported 4 subscriber(s) from {path}: 4 new, 0 updated; skipped 6 bad row(s)\n"
    errors = [line.removeprefix(f"{path}: ") for line in result.stderr.splitlines() if line.startswith(str(path))]
    assert errors == [
        "line 3: email: not an email address: 'not-an-email'",
        "line 5: phone: not an E.164 phone number: '+1 415 555 0101' (write + and the country code and number, "
        "digits only, e.g. +14155550100)",
        "line 7: email ana@example.com repeats line 2 (line 2 is kept)",
        "line 9: email: not an email address: 'chen@example.com\\nextra'",
        "line 11: no email or phone",
        "line 12: 5 fields, but the header row has 4",
    ]
    assert "ignored column(s) name" in result.stderr
    rows = {r["email"] or r["phone"]: r for r in listed(cli, config)}
    assert {k: v["components"] for k, v in rows.items()} == {
        "ana@example.com": ["Checkout", "API"],
        "+14155550100": [],
        "bo@example.com": ["API", "Search"],
        "+14155550102": ["API", "Search"],
    }

    # Importing again updates components, adds nothing twice, and reports as JSON on request.
    path.write_text("email,components\nana@example.com,Search\nnew@example.com,\n")
    again = cli("subscribers", "import", str(path), "--json", "--config", str(config))
    assert again.code == 0, again.stderr
    assert again.json == {"created": 1, "updated": 1, "skipped": [], "ignored_columns": []}
    rows = {r["email"] or r["phone"]: r for r in listed(cli, config)}
    assert rows["ana@example.com"]["components"] == ["Search"] and len(rows) == 5


def test_an_import_never_resubscribes(
    cli: Callable[..., Result], config: Path, api: TestClient, tmp_path: Path
) -> None:
    """Someone who unsubscribed stays unsubscribed whatever list is imported; add --resubscribe undoes it."""
    args = ("--config", str(config))
    ana = cli("subscribers", "add", "--email", "ana@example.com", "--json", *args).json
    assert api.patch(f"/v1/subscribers/{ana['id']}", json={"status": "unsubscribed"}, headers=auth()).status_code == 200
    path = tmp_path / "again.csv"
    path.write_text("email,components\nana@example.com,Checkout\n")
    assert cli("subscribers", "import", str(path), *args).code == 0
    (row,) = listed(cli, config)
    assert row["status"] == "unsubscribed" and row["components"] == ["Checkout"]

    plain_add = cli("subscribers", "add", "--email", "ana@example.com", *args)
    assert plain_add.code == 0 and "unsubscribed on" in plain_add.stderr
    assert listed(cli, config)[0]["status"] == "unsubscribed"
    back = cli("subscribers", "add", "--email", "ana@example.com", "--resubscribe", "--json", *args)
    assert back.json["status"] == "confirmed" and back.json["unsubscribed_at"] is None


def test_importing_10000_rows_takes_seconds(cli: Callable[..., Result], config: Path, tmp_path: Path) -> None:
    """10,000 rows (half email, half phone, a few bad) in one command, well within seconds."""
    lines = ["email,phone,components"]
    for i in range(5000):
        lines.append(f"user{i}@example.com,,{'Checkout' if i % 2 else ''}")
        lines.append(f",+1415555{i:04d},API;Search")
    for line in (1001, 5002, 9003):  # 1-based file lines, header included
        lines[line - 1] = "broken@,,"
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    result = cli("subscribers", "import", str(path), "--config", str(config))
    elapsed = time.monotonic() - started
    assert result.code == 0, result.stderr
    assert result.stdout.endswith("9997 new, 0 updated; skipped 3 bad row(s)\n")
    assert [line.split(": ")[1] for line in result.stderr.splitlines()] == ["line 1001", "line 5002", "line 9003"]
    assert elapsed < 20, f"the import took {elapsed:.1f}s"
    rows = listed(cli, config)
    assert len(rows) == 9997
    assert sum(1 for r in rows if r["phone"]) == 5000 - 2  # lines 1001 and 9003 were phones


# --- the HTTP API --------------------------------------------------------------------------------------------


def test_the_api_needs_tokens_with_the_right_scope(api: TestClient) -> None:
    body = {"email": "ana@example.com"}
    assert api.get("/v1/subscribers").status_code == 401
    assert api.post("/v1/subscribers", json=body, headers=auth("wrong-token-0123456789")).status_code == 401
    refused = api.post("/v1/subscribers", json=body, headers=auth(READER))
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("application/problem+json")
    assert api.get("/v1/subscribers", headers=auth(READER)).json() == []


def test_subscribers_through_the_api(api: TestClient, cli: Callable[..., Result], config: Path) -> None:
    """Create (201, then 200 for a known address), read, filter, change, delete; bad input is a 422 problem."""
    created = api.post("/v1/subscribers", json={"email": "Ana@Example.com", "components": ["Checkout"]},
                       headers=auth())  # fmt: skip
    assert created.status_code == 201, created.text
    ana = created.json()
    assert ana["email"] == "ana@example.com" and ana["status"] == "confirmed"
    assert created.headers["location"] == f"/v1/subscribers/{ana['id']}"
    known = api.post("/v1/subscribers", json={"email": "ana@example.com", "components": ["API"]}, headers=auth())
    assert known.status_code == 200 and known.json()["id"] == ana["id"] and known.json()["components"] == ["API"]
    phone = api.post("/v1/subscribers", json={"phone": "+14155550100"}, headers=auth()).json()

    everyone = api.get("/v1/subscribers", headers=auth(READER)).json()
    assert [s["id"] for s in everyone] == [ana["id"], phone["id"]]
    assert [s["id"] for s in api.get("/v1/subscribers?email=ANA@example.com", headers=auth()).json()] == [ana["id"]]
    assert [s["id"] for s in api.get("/v1/subscribers?component=Search", headers=auth()).json()] == [phone["id"]]
    assert [s["id"] for s in api.get(f"/v1/subscribers?after={ana['id']}", headers=auth()).json()] == [phone["id"]]
    assert api.get(f"/v1/subscribers/{ana['id']}", headers=auth()).json()["components"] == ["API"]

    changed = api.patch(f"/v1/subscribers/{ana['id']}", json={"components": [], "status": "unsubscribed"},
                        headers=auth())  # fmt: skip
    assert changed.status_code == 200 and changed.json()["status"] == "unsubscribed"
    assert changed.json()["components"] == [] and changed.json()["unsubscribed_at"]
    assert [s["id"] for s in api.get("/v1/subscribers?status=unsubscribed", headers=auth()).json()] == [ana["id"]]
    # the command line sees the same log
    assert {r["id"]: r["status"] for r in listed(cli, config)} == {ana["id"]: "unsubscribed", phone["id"]: "confirmed"}

    assert api.delete(f"/v1/subscribers/{ana['id']}", headers=auth()).status_code == 204
    missing = api.get(f"/v1/subscribers/{ana['id']}", headers=auth())
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")
    assert api.delete(f"/v1/subscribers/{ana['id']}", headers=auth()).status_code == 404

    for body, field in [
        ({"email": "not-an-address"}, "email"),
        ({"phone": "555-0100"}, "phone"),
        ({"email": "a@example.com", "phone": "+14155550100"}, "body"),
        ({}, "body"),
        ({"email": "a@example.com", "components": ["ok", "bad\u0000name"]}, "components"),
        ({"email": "a@example.com", "nickname": "a"}, "nickname"),
    ]:
        problem = api.post("/v1/subscribers", json=body, headers=auth())
        assert problem.status_code == 422, (body, problem.text)
        assert problem.headers["content-type"].startswith("application/problem+json")
        assert problem.json()["errors"][0]["field"] == field, problem.json()
    assert api.get("/v1/subscribers?email=nope", headers=auth()).status_code == 422
    assert (
        api.patch(f"/v1/subscribers/{phone['id']}", json={"status": "quarantined"}, headers=auth()).status_code == 422
    )


def test_a_repeated_post_with_an_idempotency_key_is_replayed(api: TestClient) -> None:
    headers = {**auth(), "Idempotency-Key": "add-ana-1"}
    first = api.post("/v1/subscribers", json={"email": "ana@example.com"}, headers=headers)
    second = api.post("/v1/subscribers", json={"email": "ana@example.com"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true" and second.json() == first.json()
