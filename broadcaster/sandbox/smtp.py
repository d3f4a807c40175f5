"""A loopback SMTP server (aiosmtpd) that records what it accepts and rejects what it is told to."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    content: bytes
    received_at: float = field(default_factory=time.time)
    #: the client's (host, port): one per SMTP session
    peer: tuple[str, int] = ("", 0)

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SmtpSandbox:
    """``reject`` recipients get ``550`` at RCPT; ``script(...)`` answers the next DATA commands.

    ``latency`` (seconds) holds each answer to DATA that long (without blocking the server's event loop, so
    other sessions go on meanwhile), as a real mail server's queueing would.
    """

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.mails: list[Mail] = []
        self.reject: set[str] = set()
        self._scripts: deque[str] = deque()
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self.port = 0

    def script(self, *replies: str) -> None:
        """Answer the next DATA commands with these replies (e.g. ``"451 4.3.0 try again later"``)."""
        with self._lock:
            self._scripts.extend(replies)

    def received(self) -> list[Mail]:
        with self._lock:
            return list(self.mails)

    def reset(self) -> None:
        with self._lock:
            self.mails.clear()
            self.reject.clear()
            self._scripts.clear()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.lower() in {r.lower() for r in self.reject}:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        with self._lock:
            if self._scripts:
                return self._scripts.popleft()
            mail = Mail(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content), peer=tuple(session.peer))
            self.mails.append(mail)
        return "250 2.0.0 OK queued"

    def start(self) -> None:
        for _ in range(5):
            self.port = free_port()
            self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
            try:
                self._controller.start()
                return
            except RuntimeError:
                continue
        raise RuntimeError("cannot start the sandbox SMTP server")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
