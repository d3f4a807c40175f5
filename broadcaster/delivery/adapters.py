"""Channel adapters for sending: the one factory, and the per-process pools that keep connections open.

The one-delivery path builds an adapter for its send and closes it after (``one_off``: one connection per
send, the plain path); a batch borrows from its process's pool for the channel (``pool``), whose adapters stay
open between sends (SMTP sessions, HTTP keep-alive). Both come from ``build``, so a channel this worker cannot
make an adapter for fails the same way on either path: a ``PermanentError``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from broadcaster.core.errors import ConfigError, PermanentError
from broadcaster.domain.broadcasts import build_channel
from broadcaster.settings import Settings
from channels import Channel


def build(settings: Settings, name: str) -> Channel[Any]:
    """The channel's adapter, as this worker has it configured; PermanentError when it cannot have one."""
    _configured(settings, name)
    try:
        return build_channel(settings, name)
    except ConfigError as exc:
        raise PermanentError(str(exc)) from exc


def _configured(settings: Settings, name: str) -> None:
    if name not in settings.channels:
        raise PermanentError(f"channel {name!r} is not in this worker's configuration")


@contextmanager
def one_off(settings: Settings, name: str) -> Iterator[Channel[Any]]:
    """An adapter built for one send and closed after it."""
    adapter = build(settings, name)
    try:
        yield adapter
    finally:
        adapter.close()


class Adapters:
    """One channel's open adapters in this process, each lent to one send at a time and kept open between
    sends: at most the channel's ``connections`` of them (``in_flight`` by default), so at most that many
    connections to the provider."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings, self.name = settings, name
        self._slots = threading.Semaphore(settings.channels[name].connections or settings.delivery.in_flight)
        self._idle: list[Channel[Any]] = []
        self._lock = threading.Lock()

    @contextmanager
    def lend(self, timeout: float) -> Iterator[Channel[Any] | None]:
        """An adapter of the channel for one send, or None when none came free within ``timeout`` seconds."""
        adapter = self._take(timeout)
        try:
            yield adapter
        finally:
            if adapter is not None:
                self._give_back(adapter)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for adapter in idle:
            adapter.close()

    def _take(self, timeout: float) -> Channel[Any] | None:
        if not self._slots.acquire(timeout=max(0.0, timeout)):
            return None
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            return build(self.settings, self.name)
        except BaseException:
            self._slots.release()
            raise

    def _give_back(self, adapter: Channel[Any]) -> None:
        with self._lock:
            self._idle.append(adapter)
        self._slots.release()


_pools_lock = threading.Lock()
#: per process id: the settings its adapters were made for, and each channel's adapters
_pools: dict[int, tuple[Settings, dict[str, Adapters]]] = {}


def pool(settings: Settings, name: str) -> Adapters:
    """This process's adapters for the channel (made after a fork, remade when the settings change);
    PermanentError for a channel this worker does not know."""
    _configured(settings, name)
    stale: dict[str, Adapters] = {}
    with _pools_lock:
        made_for, pools = _pools.get(os.getpid(), (None, {}))
        if made_for is not settings:
            stale, pools = pools, {}
            _pools[os.getpid()] = (settings, pools)
        if name not in pools:
            pools[name] = Adapters(settings, name)
        adapters = pools[name]
    for old in stale.values():
        old.close()
    return adapters


def close_pools() -> None:
    """Close this process's idle adapters (on exit, once its sends have finished)."""
    with _pools_lock:
        _, pools = _pools.pop(os.getpid(), (None, {}))
    for adapters in pools.values():
        adapters.close()
