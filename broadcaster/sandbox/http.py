"""A loopback HTTP server for provider emulators: routes, recorded requests and scripted faults.

What it records and answers (``Request``, ``Answer``) is defined in ``channels.emulation``, which the emulators
are written against.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.emulation import Answer, Handler, Request

__all__ = ["Answer", "Handler", "HttpSandbox", "Request"]

#: how long a scripted hang holds a request before giving up (tests never wait this long)
HANG_LIMIT = 120.0


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    endpoint: str
    handler: Handler


class _Server(ThreadingHTTPServer):
    """A thread per connection; a deep accept backlog, so a burst of clients is not refused or delayed."""

    daemon_threads = True
    request_queue_size = 1024


class HttpSandbox:
    """Serves the registered routes on 127.0.0.1; answers scripted faults first, then the emulator's own.

    ``latency`` (seconds) holds every answer that long, as a real provider's round trip would, on top of a
    scripted ``Answer.delay``; each connection has its own thread, so requests wait out their latency together.
    """

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.routes: list[Route] = []
        self.requests: list[Request] = []
        self._scripts: dict[str, deque[Answer]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def route(self, method: str, pattern: str, endpoint: str, handler: Handler) -> None:
        self.routes.append(Route(method, re.compile(pattern + "$"), endpoint, handler))

    @property
    def url(self) -> str:
        assert self._server is not None, "the sandbox is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, endpoint: str, *answers: Answer) -> None:
        """Answer the next requests to ``endpoint`` with ``answers``, in order, before the normal answers."""
        with self._lock:
            self._scripts[endpoint].extend(answers)

    def received(self, endpoint: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if endpoint is None or r.endpoint == endpoint]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._scripts.clear()

    def start(self) -> None:
        sandbox = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The head and the body go out in two writes: with Nagle's algorithm the body would wait for the
            # client's delayed ACK (40 ms on Linux) on every request after a connection's first.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                sandbox._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self._server.serve_forever, name="sandbox-http", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        request = Request(
            endpoint="unknown",
            method=handler.command,
            path=parts.path,
            headers=dict(handler.headers.items()),
            body=body,
            params={k: v[0] for k, v in parse_qs(parts.query).items()},
            at=time.time(),
            peer=handler.client_address[:2],
        )
        answer = Answer(404, {"error": "no such endpoint in the sandbox"})
        for route in self.routes:
            match = route.pattern.match(parts.path)
            if match and route.method == handler.command:
                request.endpoint = route.endpoint
                with self._lock:
                    scripted = self._scripts[route.endpoint].popleft() if self._scripts[route.endpoint] else None
                request.scripted = scripted is not None
                answer = scripted or route.handler(request, match)
                break
        request.status = answer.status
        with self._lock:
            self.requests.append(request)
        if self.latency + answer.delay > 0:
            self._stopping.wait(self.latency + answer.delay)
        if answer.hang:
            self._stopping.wait(HANG_LIMIT)
            answer.close = True
        if answer.close:
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        payload, content_type = answer.encoded()
        handler.send_response(answer.status)
        headers = {"Content-Type": content_type, **answer.headers, "Content-Length": str(len(payload))}
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)
