"""Local stand-ins for every provider, on 127.0.0.1: the tests, ``broadcaster demo`` and drills use them.

One HTTP server carries the HTTP emulators' routes; SMTP has its own server. Each emulator module in this
package holds one ``Emulator`` subclass, found by the channel ``type`` it stands in for.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any, ClassVar, Self

from broadcaster.sandbox.http import Answer, HttpSandbox, Request
from broadcaster.sandbox.smtp import Mail, SmtpSandbox

__all__ = ["Answer", "Emulator", "HttpSandbox", "Mail", "Request", "Sandbox", "SmtpSandbox"]


class Emulator:
    """Stands in for one provider: installs its routes and writes a channel table that points at it."""

    type: ClassVar[str]

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def install(self) -> None:
        """Register this provider's routes on ``self.sandbox.http``."""

    def channel_config(self, name: str) -> dict[str, Any]:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget any fault this emulator was told to produce."""

    def script_demo(self) -> list[str]:
        """Script the faults ``broadcaster demo`` shows off; return what a viewer should expect."""
        return []


@cache
def emulator_types() -> dict[str, type[Emulator]]:
    found: dict[str, type[Emulator]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name in ("http", "smtp"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Emulator) and "type" in vars(value):
                found[value.type] = value
    return found


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
