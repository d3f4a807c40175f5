"""What a channel's provider emulator is written against (``channels/<type>/emulator.py``).

The sandbox (``broadcaster.sandbox``) runs one loopback HTTP server and one SMTP server; each channel type
that names an ``emulator`` gets one ``Emulator``, which installs its provider's routes on the HTTP server (or
scripts the SMTP server) and writes a ``[channels.NAME]`` table that points at it. The emulators see the servers
only through ``Servers``, so a channel package never imports the sandbox.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qs


@dataclass
class Answer:
    """What an endpoint answers: a status, a body and headers; or a delay, a hang, a closed connection."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False
    close: bool = False

    def encoded(self) -> tuple[bytes, str]:
        if self.body is None:
            return b"", "text/plain"
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), "application/json"


@dataclass
class Request:
    """One request an emulator received, and what it answered."""

    endpoint: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    params: dict[str, str]
    at: float
    status: int = 0
    scripted: bool = False
    note: dict[str, Any] = field(default_factory=dict)
    #: the client's (host, port): one per connection, so it tells connections kept open from new ones
    peer: tuple[str, int] = ("", 0)

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode(), keep_blank_values=True)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


Handler = Callable[[Request, re.Match[str]], Answer]


class HttpServer(Protocol):
    """The sandbox's HTTP server, as an emulator uses it."""

    @property
    def url(self) -> str: ...

    def route(self, method: str, pattern: str, endpoint: str, handler: Handler) -> None:
        """Answer ``method`` requests whose path matches ``pattern`` with ``handler``, recorded as ``endpoint``."""

    def script(self, endpoint: str, *answers: Answer) -> None:
        """Answer the next requests to ``endpoint`` with ``answers``, before the emulator's own answers."""

    def received(self, endpoint: str | None = None) -> list[Request]: ...


class MailServer(Protocol):
    """The sandbox's SMTP server, as an emulator uses it: its port, and the recipients it refuses (550)."""

    @property
    def port(self) -> int: ...

    @property
    def reject(self) -> set[str]: ...


class Servers(Protocol):
    @property
    def http(self) -> HttpServer: ...

    @property
    def smtp(self) -> MailServer: ...


@dataclass(frozen=True)
class Faults:
    """How a provider says each thing the shared contract test (``tests/test_channel_contract.py``) scripts on
    ``endpoint``, the HTTP endpoint that one send reaches."""

    endpoint: str
    #: a rate limit that asks for 3 seconds
    rate_limited: Answer
    server_error: Answer
    #: an answer no retry can change
    permanent: Answer


class Emulator:
    """Stands in for one provider: installs its routes and writes a channel table that points at it."""

    type: ClassVar[str]
    #: the channel ``broadcaster demo`` makes of this type is named so (default: the type)
    demo_name: ClassVar[str | None] = None

    def __init__(self, sandbox: Servers) -> None:
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

    def faults(self) -> Faults | None:
        """How this provider answers the shared contract's cases; None when it is not reached over HTTP."""
        return None
