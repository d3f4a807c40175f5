"""Unsubscribing: the signed one-click link in every subscriber email (RFC 8058), and SMS STOP/START through
Twilio's signed inbound webhook, each served by the real ASGI app; broadcasts are sent by the command line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from twilio.request_validator import RequestValidator

from broadcaster.interfaces.api import create_app
from broadcaster.sandbox import Sandbox
from broadcaster.settings import load_settings
from broadcaster.testing import Result
from channels.sms.emulator import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER
from tests.support.subscribers import TOKENS, WRITER, audience_channels, listed

API_URL = "https://status-api.example.com"
OPS = "ops@example.com"
SEND = ("send", "--status", "investigating", "--message", "Payments fail for some customers.",
        "--channel", "news", "--channel", "texts")  # fmt: skip
LINK = re.compile(r"^<(https://status-api\.example\.com/unsubscribe/([0-9A-Za-z_.-]+))>$")


@pytest.fixture
def config(embedded_config: Callable[..., Path], sandbox: Sandbox, no_subscribers: None) -> Path:
    """Subscribers by email and SMS; links point at the API's public URL; no signing key configured."""
    return embedded_config(
        channels=audience_channels(sandbox, emails=[OPS]), subscribers={"api_url": API_URL}, api=TOKENS
    )


@pytest.fixture
def api(config: Path) -> Iterator[TestClient]:
    with TestClient(create_app(load_settings(config))) as client:
        yield client


def add(cli: Callable[..., Result], config: Path, *args: str) -> dict[str, Any]:
    result = cli("subscribers", "add", *args, "--json", "--config", str(config))
    assert result.code == 0, result.stderr
    view: dict[str, Any] = result.json
    return view


def statuses(cli: Callable[..., Result], config: Path) -> dict[str, str]:
    """Each subscriber's status, as `subscribers list` shows it."""
    return {(r["email"] or r["phone"]): r["status"] for r in listed(cli, config)}


def api_statuses(api: TestClient) -> dict[str, str]:
    """Each subscriber's status, as GET /v1/subscribers shows it."""
    rows = api.get("/v1/subscribers", headers={"Authorization": f"Bearer {WRITER}"}).json()
    return {(r["email"] or r["phone"]): r["status"] for r in rows}


def send(cli: Callable[..., Result], config: Path, title: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = cli(*SEND, "--title", title, "--json", "--config", str(config), env=env)
    assert result.code == 0, result.stderr
    summary: dict[str, Any] = result.json
    return summary


def links(sandbox: Sandbox) -> dict[str, str]:
    """Each subscriber email's one-click link (from its List-Unsubscribe header), by recipient."""
    found = {}
    for mail in sandbox.smtp.received():
        header = mail.message["List-Unsubscribe"]
        if header is not None:
            match = LINK.match(str(header))
            assert match, header
            found[mail.recipients[0]] = match[1]
    return found


# --- the link ------------------------------------------------------------------------------------------------


def test_every_subscriber_email_carries_its_own_signed_one_click_link(
    cli: Callable[..., Result], config: Path, sandbox: Sandbox
) -> None:
    """Headers per RFC 8058 and the same link in both bodies; a configured recipient gets neither."""
    for address in ("ana@example.com", "bo@example.com"):
        add(cli, config, "--email", address)
    send(cli, config, "Checkout errors")
    mails = {m.recipients[0]: m.message for m in sandbox.smtp.received()}
    assert set(mails) == {OPS, "ana@example.com", "bo@example.com"}
    found = links(sandbox)
    assert set(found) == {"ana@example.com", "bo@example.com"} and found["ana@example.com"] != found["bo@example.com"]
    for address, url in found.items():
        message = mails[address]
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert f"Unsubscribe: {url}" in text
        assert f'<a href="{url}">Unsubscribe</a>' in html and html.rstrip().endswith("</html>")
    ops = mails[OPS]
    assert ops["List-Unsubscribe"] is None and ops["List-Unsubscribe-Post"] is None
    assert "nsubscribe" not in ops.get_body(("plain",)).get_content()


def test_unsubscribe_by_link_through_the_api(
    cli: Callable[..., Result], config: Path, sandbox: Sandbox, api: TestClient
) -> None:
    """GET shows a confirmation and changes nothing; POST List-Unsubscribe=One-Click unsubscribes, for good."""
    add(cli, config, "--email", "ana@example.com")
    add(cli, config, "--email", "bo@example.com")
    send(cli, config, "First")
    path = urlsplit(links(sandbox)["ana@example.com"]).path

    page = api.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'name="List-Unsubscribe" value="One-Click"' in page.text and "a***@example.com" in page.text
    assert statuses(cli, config)["ana@example.com"] == "confirmed"

    # What a mail provider sends when the reader clicks "unsubscribe" (Gmail's form, RFC 8058 section 3.1)
    done = api.post(path, content=b"List-Unsubscribe=One-Click",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert done.status_code == 200, done.text
    assert "gets no more status updates" in done.text
    assert statuses(cli, config) == {"ana@example.com": "unsubscribed", "bo@example.com": "confirmed"}
    assert api.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200  # again: still fine
    assert "is unsubscribed" in api.get(path).text

    sandbox.reset()
    later = send(cli, config, "Second")
    assert sorted(d["target"] for d in later["deliveries"]) == ["bo@example.com", OPS]
    assert "ana@example.com" not in {m.recipients[0] for m in sandbox.smtp.received()}


def test_one_click_in_a_multipart_body_as_in_rfc_8058(
    cli: Callable[..., Result], config: Path, sandbox: Sandbox, api: TestClient
) -> None:
    add(cli, config, "--email", "ana@example.com")
    send(cli, config, "First")
    path = urlsplit(links(sandbox)["ana@example.com"]).path
    boundary = "----broadcaster-test"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"One-Click\r\n--{boundary}--\r\n"
    ).encode()
    answer = api.post(path, content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 200, answer.text
    assert statuses(cli, config)["ana@example.com"] == "unsubscribed"


def test_a_forged_or_incomplete_unsubscribe_changes_nothing(
    cli: Callable[..., Result], config: Path, sandbox: Sandbox, api: TestClient
) -> None:
    """A changed signature, another subscriber's id, or a POST without One-Click: nobody is unsubscribed."""
    ana = add(cli, config, "--email", "ana@example.com")
    bo = add(cli, config, "--email", "bo@example.com")
    send(cli, config, "First")
    token = urlsplit(links(sandbox)["ana@example.com"]).path.rsplit("/", 1)[1]
    assert token.startswith(ana["id"] + ".")
    mac = token.split(".", 1)[1]
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    for forged in (f"{ana['id']}.{flipped}", f"{bo['id']}.{mac}", ana["id"], f"{ana['id']}."):
        for answer in (
            api.get(f"/unsubscribe/{forged}"),
            api.post(f"/unsubscribe/{forged}", data={"List-Unsubscribe": "One-Click"}),
        ):
            assert answer.status_code == 404, (forged, answer.text)
            assert "not valid" in answer.text
    missing = api.post(f"/unsubscribe/{token}", data={"unsubscribe": "yes"})
    assert missing.status_code == 400 and missing.headers["content-type"].startswith("application/problem+json")
    assert "List-Unsubscribe=One-Click" in missing.json()["detail"]
    assert api.post(f"/unsubscribe/{token}").status_code == 400
    assert statuses(cli, config) == {"ana@example.com": "confirmed", "bo@example.com": "confirmed"}


def test_the_signing_key_may_come_from_the_configuration(
    cli: Callable[..., Result],
    embedded_config: Callable[..., Path],
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    no_subscribers: None,
) -> None:
    """With [subscribers] signing_key = "${VAR}", a link's token is id.base64url(HMAC-SHA256(key, "unsubscribe:" + id))."""
    key = "a-signing-key-for-the-tests-0123456789"
    monkeypatch.setenv("UNSUBSCRIBE_SIGNING_KEY", key)
    config = embedded_config(
        channels=audience_channels(sandbox),
        subscribers={"api_url": API_URL, "signing_key": "${UNSUBSCRIBE_SIGNING_KEY}"},
    )
    ana = add(cli, config, "--email", "ana@example.com")
    send(cli, config, "First", env={"UNSUBSCRIBE_SIGNING_KEY": key})
    token = urlsplit(links(sandbox)["ana@example.com"]).path.rsplit("/", 1)[1]
    mac = hmac.new(key.encode(), f"unsubscribe:{ana['id']}".encode(), hashlib.sha256).digest()
    assert token == f"{ana['id']}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

    with TestClient(create_app(load_settings(config))) as api:
        assert api.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert statuses(cli, config)["ana@example.com"] == "unsubscribed"

    monkeypatch.setenv("UNSUBSCRIBE_SIGNING_KEY", "another-key-entirely-0123456789")
    with TestClient(create_app(load_settings(config))) as api:
        assert api.get(f"/unsubscribe/{token}").status_code == 404  # a rotated key invalidates old links


# --- SMS STOP / START ----------------------------------------------------------------------------------------

WEBHOOK = "/webhooks/twilio"


def inbound(body: str, sender: str, **extra: str) -> dict[str, str]:
    """An inbound-message webhook's form, as Twilio posts it (each message with a SID of its own)."""
    return {
        "AccountSid": ACCOUNT_SID,
        "MessageSid": "SM" + secrets.token_hex(16),
        "From": sender,
        "To": FROM_NUMBER,
        "Body": body,
        "NumMedia": "0",
        **extra,
    }


def signed(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


def texted(sandbox: Sandbox) -> list[str]:
    return sorted(r.note["to"] for r in sandbox.http.received("twilio.message") if r.status == 201)


def test_sms_stop_and_start_with_a_valid_signature(
    cli: Callable[..., Result], config: Path, sandbox: Sandbox, api: TestClient
) -> None:
    """STOP (any case, any STOP word) unsubscribes the sender; START confirms it again; TwiML answers."""
    add(cli, config, "--phone", "+14155550131")
    add(cli, config, "--phone", "+14155550132")
    summary = send(cli, config, "First")
    assert texted(sandbox) == ["+14155550131", "+14155550132"]
    bodies = [r.form["Body"][0] for r in sandbox.http.received("twilio.message")]
    assert all(body.endswith("Reply STOP to unsubscribe") for body in bodies)
    assert summary["status"] == "delivered"

    # Twilio signs the URL configured in its console: the API's public URL ([subscribers] api_url).
    stop = inbound(" stop ", "+14155550131")
    answer = api.post(WEBHOOK, data=stop, headers=signed(API_URL + WEBHOOK, stop))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/xml")
    assert answer.text == '<?xml version="1.0" encoding="UTF-8"?><Response />'
    assert statuses(cli, config) == {"+14155550131": "unsubscribed", "+14155550132": "confirmed"}

    sandbox.reset()
    send(cli, config, "Second")
    assert texted(sandbox) == ["+14155550132"]

    # ... and only that URL while api_url is set: not the one this server sees (tests/test_api_hardening.py)
    start = inbound("Start", "+14155550131")
    assert api.post(WEBHOOK, data=start, headers=signed(f"http://testserver{WEBHOOK}", start)).status_code == 403
    assert api_statuses(api)["+14155550131"] == "unsubscribed"
    assert api.post(WEBHOOK, data=start, headers=signed(API_URL + WEBHOOK, start)).status_code == 200
    assert api_statuses(api)["+14155550131"] == "confirmed"
    for word in ("QUIT", "unsubscribe", "Cancel"):
        message = inbound(word, "+14155550132")
        assert api.post(WEBHOOK, data=message, headers=signed(API_URL + WEBHOOK, message)).status_code == 200
        assert api_statuses(api)["+14155550132"] == "unsubscribed"
        message = inbound("unstop", "+14155550132")
        assert api.post(WEBHOOK, data=message, headers=signed(API_URL + WEBHOOK, message)).status_code == 200
        assert api_statuses(api)["+14155550132"] == "confirmed"
    chat = inbound("stop sending me this please", "+14155550132")  # not a keyword: nothing happens
    assert api.post(WEBHOOK, data=chat, headers=signed(API_URL + WEBHOOK, chat)).status_code == 200
    assert api_statuses(api)["+14155550132"] == "confirmed"

    sandbox.reset()
    send(cli, config, "Third")
    assert texted(sandbox) == ["+14155550131", "+14155550132"]


def test_a_forged_twilio_signature_changes_nothing(cli: Callable[..., Result], config: Path, api: TestClient) -> None:
    """Wrong token, tampered body, another account, another URL or no signature: 403, nobody unsubscribed."""
    add(cli, config, "--phone", "+14155550131")
    stop = inbound("STOP", "+14155550131")
    tampered = signed(API_URL + WEBHOOK, inbound("START", "+14155550131"))
    other_account = inbound("STOP", "+14155550131", AccountSid="AC" + "1" * 32)
    attempts = [
        (stop, signed(API_URL + WEBHOOK, stop, token="not-the-auth-token")),
        (stop, tampered),
        (other_account, signed(API_URL + WEBHOOK, other_account)),
        (stop, signed("https://evil.example.com" + WEBHOOK, stop)),
        (stop, {}),
    ]
    for params, headers in attempts:
        answer = api.post(WEBHOOK, data=params, headers=headers)
        assert answer.status_code == 403, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert statuses(cli, config) == {"+14155550131": "confirmed"}


def test_a_stop_from_an_unknown_number_is_remembered(
    cli: Callable[..., Result], config: Path, api: TestClient, tmp_path: Path
) -> None:
    """A number that texted STOP is kept as unsubscribed, so a later import does not subscribe it."""
    stop = inbound("STOP", "+14155550139")
    assert api.post(WEBHOOK, data=stop, headers=signed(API_URL + WEBHOOK, stop)).status_code == 200
    assert statuses(cli, config) == {"+14155550139": "unsubscribed"}
    path = tmp_path / "list.csv"
    path.write_text("phone\n+14155550139\n+14155550140\n")
    assert cli("subscribers", "import", str(path), "--config", str(config)).code == 0
    assert statuses(cli, config) == {"+14155550139": "unsubscribed", "+14155550140": "confirmed"}
