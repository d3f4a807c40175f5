"""The sandbox's configurable latency: every answer takes at least that long, and requests wait it out together."""

from __future__ import annotations

import contextlib
import functools
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage

import httpx
import pytest

from broadcaster.sandbox import Sandbox
from channels.sms.emulator import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER

LATENCY = 0.2
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def slow() -> Iterator[Sandbox]:
    with Sandbox(latency=LATENCY) as sandbox:
        yield sandbox


@functools.cache
def http() -> httpx.Client:
    """One client for every thread (a client per request spends more time building TLS contexts than waiting)."""
    return httpx.Client(limits=httpx.Limits(max_connections=50))


def send_sms(sandbox: Sandbox, number: int) -> None:
    answer = http().post(
        f"{sandbox.http.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        auth=(ACCOUNT_SID, AUTH_TOKEN),
        data={"To": f"+4477009{number:05d}", "From": FROM_NUMBER, "Body": "Checkout is failing."},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text


def send_mail(sandbox: Sandbox, number: int) -> None:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "status@example.com", f"user{number}@example.com", "Outage"
    mail.set_content("Checkout is failing.")
    with smtplib.SMTP("127.0.0.1", sandbox.smtp.port, timeout=10) as client:
        client.send_message(mail)


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


@pytest.mark.parametrize("send", [send_sms, send_mail], ids=["http", "smtp"])
def test_each_answer_waits_for_the_latency_and_requests_wait_together(
    slow: Sandbox, send: Callable[[Sandbox, int], None]
) -> None:
    assert timed(lambda: send(slow, 0)) >= LATENCY

    with ThreadPoolExecutor(20) as pool:
        elapsed = timed(lambda: list(pool.map(lambda n: send(slow, n), range(1, 21))))
    assert LATENCY <= elapsed < 0.4 * 20 * LATENCY, elapsed  # served concurrently, not one after another
    assert len(slow.http.received("twilio.message")) + len(slow.smtp.received()) == 21


def test_the_default_adds_no_latency() -> None:
    with Sandbox() as sandbox:
        assert sandbox.http.latency == sandbox.smtp.latency == 0.0
        assert timed(lambda: send_sms(sandbox, 0)) < LATENCY


def test_stop_is_not_held_up_by_a_request_waiting_out_its_latency() -> None:
    sandbox = Sandbox(latency=60).start()

    def held() -> None:
        with contextlib.suppress(Exception):  # answered or cut off: either way, at once
            send_sms(sandbox, 0)

    waiting = threading.Thread(target=held, daemon=True)
    waiting.start()
    deadline = time.monotonic() + 10
    while not sandbox.http.received() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sandbox.http.received(), "the request never arrived"
    assert timed(sandbox.stop) < 5
    waiting.join(5)  # the held request is answered (or cut) at once, not after 60 s
    assert not waiting.is_alive()
