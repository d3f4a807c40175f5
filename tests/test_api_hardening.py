"""The API's hardening: body limits before reading, the token before the body, closed metric labels, link
tokens masked in the access log, PATCH not re-subscribing, Twilio's signed URL and replays, pinned docs.

Body limits and the access log are tested against ``broadcaster api`` itself (uvicorn on a loopback port, a
subprocess) with raw sockets, so what the server reads and when it answers is what a client sees.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import select
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete
from sqlalchemy import select as sql_select
from twilio.request_validator import RequestValidator

from broadcaster.domain.links import sign, signing_key
from broadcaster.interfaces.api import create_app
from broadcaster.sandbox import Sandbox
from broadcaster.settings import load_settings
from broadcaster.store.db import session_scope
from broadcaster.store.models import InboundMessage, utcnow
from broadcaster.testing import Result, free_port, write_config
from channels.sms.emulator import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER
from tests.support.subscribers import READER, TOKENS, WRITER, audience_channels

API_URL = "https://status-api.example.com"
LIMIT = 256 * 1024  # the default [api] max_body_bytes
MiB = 1024 * 1024


def auth(token: str = WRITER) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and {"type", "title", "detail"} <= body.keys()
    return body


# --- a real server ---------------------------------------------------------------------------------------------


@dataclass
class Server:
    """``broadcaster api`` in a subprocess; everything it printed (stdout and stderr) goes to ``log``."""

    port: int
    config: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.output()


def start_server(config: Path, folder: Path) -> Server:
    port = free_port()
    log = folder / f"api-{port}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
    command = [sys.executable, "-m", "broadcaster", "api", "--port", str(port), "--config", str(config)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    server = Server(port, config, process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"broadcaster api exited at start:\n{server.output()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"broadcaster api did not answer:\n{server.output()[-3000:]}")


@pytest.fixture(scope="module")
def server(database_url: str, running_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per log backend, with the default body limit, API tokens and subscriber channels."""
    folder = tmp_path_factory.mktemp("api")
    config = write_config(
        folder / "broadcaster.toml",
        {
            "broker_url": "",
            "database_url": database_url,
            "subscribers": {"api_url": API_URL},
            "api": TOKENS,
            "channels": audience_channels(running_sandbox),
        },
    )
    running = start_server(config, folder)
    yield running
    running.stop()


@dataclass
class Exchange:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client got out before the answer came (or the connection went)
    closed: bool  # the server closed the connection after answering


def exchange(
    port: int, head: str, chunks: Iterable[bytes] = (), timeout: float = 10.0, linger: float = 1.0
) -> Exchange:
    """Send a request's head, then ``chunks`` one by one until an answer arrives; read the answer, and wait
    ``linger`` seconds more for the server to close the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    with sock:
        sock.sendall(head.encode("latin-1"))
        sent = 0
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # answered (or closed) already: stop sending, as a client watching would
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
            sent += len(chunk)
        received, closed = b"", False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                closed = True
                break
            except TimeoutError:
                break
            if not data:
                closed = True
                break
            received += data
            if _complete(received):
                if not linger:
                    break
                sock.settimeout(linger)  # the answer is whole: see whether the server closes
    assert b"\r\n\r\n" in received, f"no answer within {timeout}s: {received!r}"
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return Exchange(int(status_line.split()[1]), headers, body, sent, closed)


def _complete(received: bytes) -> bool:
    head, sep, body = received.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return bool(sep and match and len(body) >= int(match[1]))


def head(method: str, path: str, headers: dict[str, str]) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return "\r\n".join(lines) + "\r\n\r\n"


def chunked(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """``total`` bytes of body as HTTP/1.1 chunks of ``size`` (no Content-Length), then the last chunk."""
    piece = b"a" * size
    for _ in range(total // size):
        yield f"{size:x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


def problem(answer: Exchange, status: int) -> dict[str, Any]:
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = json.loads(answer.body)
    assert body["status"] == status
    return body


OPEN_POSTS = ["/webhooks/twilio", "/unsubscribe/01HZZZZZZZZZZZZZZZZZZZZZZZ.bWFj"]


# --- 1. bodies: the limit, and the token first -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/incidents", "/v1/subscribers", *OPEN_POSTS])
def test_a_declared_oversize_body_is_refused_before_it_is_read(server: Server, path: str) -> None:
    """Content-Length over the limit: a 413 problem at once, though not one byte of the body was sent."""
    declared = {"Content-Length": str(100 * MiB), "Content-Type": "application/json", **auth()}
    answer = exchange(server.port, head("POST", path, declared), timeout=5)
    body = problem(answer, 413)
    assert body["title"] == "Content Too Large" and str(LIMIT) in body["detail"] and body["instance"] == path
    assert answer.closed  # the server does not wait for the 100 MiB

    # the same through an ordinary client that sends the whole body
    response = httpx.post(f"{server.url}{path}", content=b"x" * (LIMIT + 1), headers=auth(), timeout=10)
    assert_problem(response, 413)


@pytest.mark.parametrize("path", ["/v1/incidents", *OPEN_POSTS])
def test_an_oversize_chunked_upload_is_cut_off(server: Server, path: str) -> None:
    """No Content-Length: the chunks are counted, the 413 comes once the limit is passed, and the server
    stops reading, so the client cannot push the rest (64 MiB) through."""
    headers = {"Transfer-Encoding": "chunked", "Content-Type": "application/json", **auth()}
    answer = exchange(server.port, head("POST", path, headers), chunked(64 * MiB), timeout=20)
    body = problem(answer, 413)
    assert body["instance"] == path
    assert answer.closed
    assert LIMIT <= answer.sent < 16 * MiB, answer.sent  # what the kernel's buffers took, no more
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_a_chunked_body_within_the_limit_is_served(server: Server) -> None:
    payload = b'{"title": "Checkout errors", "status": "investigating", "message": "Payments fail."}'
    headers = {"Transfer-Encoding": "chunked", "Content-Type": "application/json", **auth()}
    chunks = [f"{len(payload):x}\r\n".encode() + payload + b"\r\n", b"0\r\n\r\n"]
    answer = exchange(server.port, head("POST", "/v1/preview", headers), chunks)
    assert answer.status == 200, answer.body
    assert set(json.loads(answer.body)) == {"news", "texts"}  # each channel's rendering


@pytest.mark.parametrize(
    "headers",
    [{}, auth("not-a-configured-token"), {"Authorization": f"Basic {WRITER}"}],
    ids=["no-token", "wrong-token", "not-bearer"],
)
def test_without_a_valid_token_the_body_is_never_read(server: Server, headers: dict[str, str]) -> None:
    """401 before the body: the server answers though the client has sent none of the body it announced."""
    for framing in ({"Content-Length": str(200 * 1024)}, {"Transfer-Encoding": "chunked"}):
        announced = {**framing, "Content-Type": "application/json", **headers}
        answer = exchange(server.port, head("POST", "/v1/incidents", announced), timeout=5, linger=0)
        assert problem(answer, 401)["instance"] == "/v1/incidents"
        assert answer.headers["www-authenticate"].startswith("Bearer")
    # a body that is not JSON is still a 401, not a 422
    for body in (b"{not json", b"\xff\xfe", b"[" * 10_000):
        response = httpx.post(f"{server.url}/v1/incidents", content=body, headers=headers, timeout=5)
        assert_problem(response, 401)
        response = httpx.patch(f"{server.url}/v1/subscribers/01HZZZZZZZZZZZZZZZZZZZZZZZ", content=body,
                               headers={"Content-Type": "application/json", **headers}, timeout=5)  # fmt: skip
        assert_problem(response, 401)


def test_without_the_scope_the_body_is_never_read(server: Server) -> None:
    """A read-only token posting: 403 before the body, whatever the body is."""
    announced = {"Content-Length": str(200 * 1024), "Content-Type": "application/json", **auth(READER)}
    answer = exchange(server.port, head("POST", "/v1/subscribers", announced), timeout=5, linger=0)
    assert problem(answer, 403)["detail"] == "this token lacks the 'write' scope"
    response = httpx.post(f"{server.url}/v1/incidents", content=b"{not json", headers=auth(READER), timeout=5)
    assert_problem(response, 403)
    # with the scope, the same bad body is what it is: a 422 naming the body
    response = httpx.post(f"{server.url}/v1/incidents", content=b"{not json",
                          headers={"Content-Type": "application/json", **auth()}, timeout=5)  # fmt: skip
    assert assert_problem(response, 422)["errors"][0]["field"] == "body"


def test_the_limit_is_configurable(
    embedded_config: Callable[..., Path], sandbox: Sandbox, cli: Callable[..., Result]
) -> None:
    config = embedded_config(api={**TOKENS, "max_body_bytes": 2048})
    with TestClient(create_app(load_settings(config))) as api:
        small = {"title": "T", "status": "investigating", "message": "m" * 1500, "channels": ["webhook"]}
        assert api.post("/v1/preview", json=small, headers=auth()).status_code == 200
        large = {**small, "message": "m" * 2100}
        assert_problem(api.post("/v1/preview", json=large, headers=auth()), 413)

    bad = embedded_config(api={**TOKENS, "max_body_bytes": 10})
    result = cli("api", "--port", str(free_port()), "--config", str(bad), timeout=30)
    assert result.code == 2, (result.stdout, result.stderr)
    assert "max_body_bytes" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- 2. metric labels ------------------------------------------------------------------------------------------


def http_series(api: TestClient) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    series = set()
    for family in text_string_to_metric_families(api.get("/metrics").text):
        if family.name.startswith("broadcaster_http_"):
            series |= {(s.name, tuple(sorted(s.labels.items()))) for s in family.samples}
    return series


def test_metric_labels_come_from_a_closed_set(embedded_config: Callable[..., Path], sandbox: Sandbox) -> None:
    """Invented methods and random paths (200 of each) add no series: `other`, `unmatched`, route templates."""
    rng = random.Random(12)

    def invented() -> str:
        return "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))

    def some_path() -> str:
        return "/" + "/".join("".join(rng.choices(string.ascii_lowercase + string.digits, k=8)) for _ in range(2))

    def some_id() -> str:
        return "01" + "".join(rng.choices(string.digits + "ABCDEFGHJKMNPQRSTVWXYZ", k=24))

    with TestClient(create_app(load_settings(embedded_config()))) as api:
        # once each kind, so that every series the loop below can touch exists
        api.request(invented(), some_path())
        api.request(invented(), f"/v1/incidents/{some_id()}")
        api.get(some_path())
        api.get(f"/v1/incidents/{some_id()}")
        api.get(f"/v1/incidents/{some_id()}", headers=auth("wrong-token-0123456789"))
        http_series(api)  # and the scrape's own
        before = http_series(api)
        for _ in range(200):
            api.request(invented(), some_path())
            api.request(invented(), f"/v1/incidents/{some_id()}")
            api.get(some_path())
            api.get(f"/v1/incidents/{some_id()}")
        after = http_series(api)
    assert after == before
    labelled = [dict(labels) for _, labels in after]
    assert {labels["method"] for labels in labelled} == {"GET", "other"}
    assert {labels["route"] for labels in labelled} == {"unmatched", "/v1/incidents/{incident_id}", "/metrics"}


# --- 3. link tokens in the access log --------------------------------------------------------------------------


def test_unsubscribe_tokens_are_masked_in_the_access_log(
    server: Server,
    cli: Callable[..., Result],
    no_subscribers: None,
) -> None:
    added = cli("subscribers", "add", "--email", "ana@example.com", "--json", "--config", str(server.config))
    assert added.code == 0, added.stderr
    token = sign(signing_key(load_settings(server.config)), added.json["id"])
    mac = token.partition(".")[2]
    forged = "01HZZZZZZZZZZZZZZZZZZZZZZZ.Zm9yZ2VkLW1hYy1vZi1hLWxpbms"
    assert httpx.get(f"{server.url}/unsubscribe/{token}", timeout=10).status_code == 200
    assert httpx.get(f"{server.url}/unsubscribe/{token}?utm_source=mail", timeout=10).status_code == 200
    one_click = {"List-Unsubscribe": "One-Click"}
    assert httpx.post(f"{server.url}/unsubscribe/{token}", data=one_click, timeout=10).status_code == 200
    assert httpx.get(f"{server.url}/unsubscribe/{forged}", timeout=10).status_code == 404
    assert httpx.get(f"{server.url}/healthz?probe=1", timeout=10).status_code == 200

    deadline = time.monotonic() + 5
    while "/healthz?probe=1" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    output = server.output()
    assert mac not in output and token not in output and forged.partition(".")[2] not in output
    assert '"GET /unsubscribe/*** HTTP/1.1" 200' in output
    assert '"GET /unsubscribe/***?utm_source=mail HTTP/1.1" 200' in output
    assert '"POST /unsubscribe/*** HTTP/1.1" 200' in output
    assert '"GET /unsubscribe/*** HTTP/1.1" 404' in output
    assert '"GET /healthz?probe=1 HTTP/1.1" 200' in output  # other paths are logged as they are


def test_tokens_are_masked_in_the_api_s_own_log_lines(tmp_path: Path, running_sandbox: Sandbox) -> None:
    """An unreachable delivery log makes the API log the failing request's path: without its token."""
    config = write_config(
        tmp_path / "broadcaster.toml",
        {
            "database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere",
            "api": TOKENS,
            "channels": audience_channels(running_sandbox),
        },
    )
    server = start_server(config, tmp_path)
    try:
        token = "01HZZZZZZZZZZZZZZZZZZZZZZZ.c2VjcmV0LW1hYy1wYXJ0LW9mLWEtbGluaw"
        response = httpx.get(f"{server.url}/unsubscribe/{token}", timeout=20)
        assert response.status_code == 503, response.text
    finally:
        output = server.stop()
    assert "while serving /unsubscribe/***" in output, output
    assert token.partition(".")[2] not in output


# --- 4. PATCH does not re-subscribe ----------------------------------------------------------------------------


@pytest.fixture
def subscriber_api(
    embedded_config: Callable[..., Path],
    sandbox: Sandbox,
    no_subscribers: None,
) -> Iterator[tuple[TestClient, Path]]:
    config = embedded_config(
        channels=audience_channels(sandbox), api=TOKENS, subscribers={"api_url": API_URL, "quarantine_after": 1}
    )
    with TestClient(create_app(load_settings(config))) as api:
        yield api, config


def test_patch_confirms_one_who_unsubscribed_only_with_resubscribe(
    subscriber_api: tuple[TestClient, Path],
) -> None:
    api, _ = subscriber_api
    ana = api.post("/v1/subscribers", json={"email": "ana@example.com", "components": ["API"]}, headers=auth()).json()
    gone = api.patch(f"/v1/subscribers/{ana['id']}", json={"status": "unsubscribed"}, headers=auth()).json()
    assert gone["status"] == "unsubscribed"

    for body in ({"status": "confirmed"}, {"status": "confirmed", "components": ["Checkout"]},
                 {"status": "confirmed", "resubscribe": False}):  # fmt: skip
        refused = api.patch(f"/v1/subscribers/{ana['id']}", json=body, headers=auth())
        problem_body = assert_problem(refused, 409)
        assert problem_body["errors"][0]["field"] == "resubscribe"
        assert problem_body["detail"].startswith("resubscribe: ")
        assert api.get(f"/v1/subscribers/{ana['id']}", headers=auth()).json() == gone  # nothing changed

    again = api.patch(f"/v1/subscribers/{ana['id']}", json={"status": "confirmed", "resubscribe": True},
                      headers=auth())  # fmt: skip
    assert again.status_code == 200 and again.json()["status"] == "confirmed"
    assert again.json()["unsubscribed_at"] is None
    # components alone may change while unsubscribed
    api.patch(f"/v1/subscribers/{ana['id']}", json={"status": "unsubscribed"}, headers=auth())
    only = api.patch(f"/v1/subscribers/{ana['id']}", json={"components": ["Search"]}, headers=auth()).json()
    assert only["status"] == "unsubscribed" and only["components"] == ["Search"]


def test_patch_still_ends_a_quarantine(
    subscriber_api: tuple[TestClient, Path], cli: Callable[..., Result], sandbox: Sandbox
) -> None:
    api, config = subscriber_api
    bob = api.post("/v1/subscribers", json={"email": "bounce@example.com"}, headers=auth()).json()
    sandbox.smtp.reject.add("bounce@example.com")
    sent = cli("send", "--title", "Checkout errors", "--status", "investigating", "--message", "Payments fail.",
               "--channel", "news", "--json", "--config", str(config))  # fmt: skip
    assert sent.code == 1, sent.stderr
    assert api.get(f"/v1/subscribers/{bob['id']}", headers=auth()).json()["status"] == "quarantined"
    ended = api.patch(f"/v1/subscribers/{bob['id']}", json={"status": "confirmed"}, headers=auth())
    assert ended.status_code == 200 and ended.json()["status"] == "confirmed" and ended.json()["failures"] == 0


# --- 5. Twilio: the signed URL, and each MessageSid once -------------------------------------------------------

WEBHOOK = "/webhooks/twilio"


def inbound(body: str, sender: str, sid: str | None = None) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "MessageSid": sid or "SM" + secrets.token_hex(16),
        "From": sender,
        "To": FROM_NUMBER,
        "Body": body,
        "NumMedia": "0",
    }


def signed(url: str, params: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(url, params)}


def status_of(api: TestClient, phone: str) -> str | None:
    rows = api.get("/v1/subscribers", params={"phone": phone}, headers=auth()).json()
    return rows[0]["status"] if rows else None


@pytest.mark.parametrize("api_url", [API_URL, None], ids=["api_url", "no-api_url"])
def test_the_signature_counts_for_api_url_only_when_it_is_set(
    embedded_config: Callable[..., Path],
    sandbox: Sandbox,
    no_subscribers: None,
    api_url: str | None,
) -> None:
    """A request signed for ``Host: evil.example`` (the URL this server would see) is refused when api_url
    is set; without api_url, the URL as the server sees it is the one Twilio signed."""
    subscribers = {"api_url": api_url} if api_url else {}
    config = embedded_config(channels=audience_channels(sandbox), api=TOKENS, subscribers=subscribers)
    with TestClient(create_app(load_settings(config))) as api:
        api.post("/v1/subscribers", json={"phone": "+14155550131"}, headers=auth())
        stop = inbound("STOP", "+14155550131")
        evil = api.post(
            WEBHOOK, data=stop, headers={"Host": "evil.example", **signed(f"http://evil.example{WEBHOOK}", stop)}
        )
        if api_url:
            assert_problem(evil, 403)
            assert status_of(api, "+14155550131") == "confirmed"
            good = api.post(WEBHOOK, data=stop, headers={"Host": "evil.example", **signed(API_URL + WEBHOOK, stop)})
            assert good.status_code == 200, good.text
        else:
            assert evil.status_code == 200, evil.text
            assert_problem(api.post(WEBHOOK, data=stop, headers=signed(API_URL + WEBHOOK, stop)), 403)
        assert status_of(api, "+14155550131") == "unsubscribed"


def test_a_replayed_message_changes_nothing(subscriber_api: tuple[TestClient, Path], database_url: str) -> None:
    """START replayed after a STOP does not re-subscribe; a replayed STOP does not undo a START; both 200."""
    api, _ = subscriber_api
    phone = "+14155550141"
    api.post("/v1/subscribers", json={"phone": phone}, headers=auth())

    def text(params: dict[str, str]) -> httpx.Response:
        answer = api.post(WEBHOOK, data=params, headers=signed(API_URL + WEBHOOK, params))
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/xml")
        assert answer.text == '<?xml version="1.0" encoding="UTF-8"?><Response />'
        return answer

    stop, start, stop_again = inbound("STOP", phone), inbound("START", phone), inbound("stop", phone)
    text(stop)
    assert status_of(api, phone) == "unsubscribed"
    text(start)
    assert status_of(api, phone) == "confirmed"
    text(stop_again)
    assert status_of(api, phone) == "unsubscribed"
    text(start)  # the replay
    assert status_of(api, phone) == "unsubscribed"
    text(stop_again)
    api.post("/v1/subscribers", json={"phone": phone, "resubscribe": True}, headers=auth())  # the operator
    text(stop)  # a replayed STOP does not undo it
    assert status_of(api, phone) == "confirmed"

    with session_scope(database_url) as session:
        stored = set(session.scalars(sql_select(InboundMessage.message_sid)))
    assert {stop["MessageSid"], start["MessageSid"], stop_again["MessageSid"]} <= stored

    # a signed request without a MessageSid is refused, naming the field
    bare = {k: v for k, v in inbound("START", phone).items() if k != "MessageSid"}
    refused = api.post(WEBHOOK, data=bare, headers=signed(API_URL + WEBHOOK, bare))
    assert assert_problem(refused, 422)["errors"][0]["field"] == "MessageSid"
    assert status_of(api, phone) == "confirmed"


def test_message_ids_older_than_30_days_are_pruned(subscriber_api: tuple[TestClient, Path], database_url: str) -> None:
    api, _ = subscriber_api
    now = utcnow()
    with session_scope(database_url) as session:
        session.execute(delete(InboundMessage))
        session.add(InboundMessage(message_sid="SM" + "a" * 32, received_at=now - timedelta(days=31)))
        session.add(InboundMessage(message_sid="SM" + "b" * 32, received_at=now - timedelta(days=29)))
    stop = inbound("STOP", "+14155550151")
    assert api.post(WEBHOOK, data=stop, headers=signed(API_URL + WEBHOOK, stop)).status_code == 200
    with session_scope(database_url) as session:
        stored = set(session.scalars(sql_select(InboundMessage.message_sid)))
    assert stored == {"SM" + "b" * 32, stop["MessageSid"]}


# --- 6. the docs load pinned assets ----------------------------------------------------------------------------


def test_docs_pages_load_pinned_assets_with_integrity(embedded_config: Callable[..., Path], sandbox: Sandbox) -> None:
    from broadcaster.interfaces.api.routes.docs import REDOC_VERSION, SWAGGER_UI_VERSION

    with TestClient(create_app(load_settings(embedded_config()))) as api:
        pages = {path: api.get(path) for path in ("/docs", "/redoc")}
        assert api.get("/openapi.json").status_code == 200
    for path, page in pages.items():
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
        urls = re.findall(r'(?:src|href)="(https?://[^"]+)"', page.text)
        assert urls, page.text
        for url in urls:  # every outside asset names an exact version and carries its hash
            assert re.search(r"@\d+\.\d+\.\d+/", url), url
            assert re.search(rf'"{re.escape(url)}" integrity="sha384-[A-Za-z0-9+/=]+" crossorigin="anonymous"',
                             page.text), url  # fmt: skip
    swagger = pages["/docs"].text
    assert f"swagger-ui-dist@{SWAGGER_UI_VERSION}/swagger-ui-bundle.js" in swagger
    assert f"swagger-ui-dist@{SWAGGER_UI_VERSION}/swagger-ui.css" in swagger
    assert f"redoc@{REDOC_VERSION}/bundles/redoc.standalone.js" in pages["/redoc"].text
    assert "fonts.googleapis.com" not in pages["/redoc"].text and "tiangolo" not in swagger
