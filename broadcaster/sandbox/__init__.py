"""Local stand-ins for every provider, on 127.0.0.1: the tests, ``broadcaster demo`` and drills use them.

One HTTP server carries the HTTP emulators' routes; SMTP has its own server. Each channel type's emulator
lives with its channel (``channels/<type>/emulator.py``, written against ``channels.emulation``); the sandbox
asks the channel registry for them.
"""

from __future__ import annotations

from typing import Any, Self

from broadcaster.sandbox.http import HttpSandbox
from broadcaster.sandbox.smtp import Mail, SmtpSandbox
from channels.emulation import Answer, Emulator, Faults, Request
from channels.registry import emulator_types

__all__ = ["Answer", "Emulator", "Faults", "HttpSandbox", "Mail", "Request", "Sandbox", "SmtpSandbox"]


class Sandbox:
    """Every emulator, running; use as a context manager or call ``start``/``stop``.

    ``latency`` (seconds; default 0) holds every HTTP answer and every SMTP answer to DATA that long.
    """

    def __init__(self, latency: float = 0.0) -> None:
        self.http = HttpSandbox(latency=latency)
        self.smtp = SmtpSandbox(latency=latency)
        self.emulators: dict[str, Emulator] = {kind: cls(self) for kind, cls in emulator_types().items()}
        for emulator in self.emulators.values():
            emulator.install()

    def start(self) -> Self:
        self.http.start()
        self.smtp.start()
        return self

    def stop(self) -> None:
        self.http.stop()
        self.smtp.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def reset(self) -> None:
        self.http.reset()
        self.smtp.reset()
        for emulator in self.emulators.values():
            emulator.reset()

    def channel_config(self, kind: str, name: str | None = None) -> dict[str, Any]:
        """A ``[channels.NAME]`` table of type ``kind`` that sends to this sandbox."""
        return self.emulators[kind].channel_config(name or kind)
