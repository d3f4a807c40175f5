"""Every channel type, by its ``type``: the built-in packages of ``channels/`` and the plugins.

A plugin is a distribution with an entry point in the group ``broadcaster.channels``: its name is the type,
its value the ``Channel`` subclass (``acme_pager = "acme_pager:PagerChannel"``). The built-in types are
written the same way, in ``BUILT_IN``. ``register`` adds a class at run time, as an entry point would (an
application embedding the broadcaster, a test). The settings, the API (inbound webhooks), the sandbox
(emulators), ``broadcaster demo`` and the contract test all ask here.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from channels.base import Channel, InboundWebhook
from channels.emulation import Emulator

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "broadcaster.channels"
#: the channel types that ship with the broadcaster, as entry points are written
BUILT_IN: dict[str, str] = {
    "email": "channels.email:EmailChannel",
    "slack": "channels.slack:SlackChannel",
    "sms": "channels.sms:SmsChannel",
    "twitter": "channels.twitter:TwitterChannel",
    "webhook": "channels.webhook:WebhookChannel",
}

ChannelType = type[Channel]  # type: ignore[type-arg]

_registered: dict[str, ChannelType] = {}


def load(reference: str) -> Any:
    """The object an entry-point style reference (``"package.module:Name"``) names."""
    module, _, name = reference.partition(":")
    found: Any = import_module(module)
    for attribute in filter(None, name.split(".")):
        found = getattr(found, attribute)
    return found


def checked(kind: str, found: Any) -> ChannelType:
    """``found`` if it is a ``Channel`` subclass of type ``kind``; else TypeError saying what it is."""
    if not (isinstance(found, type) and issubclass(found, Channel)):
        raise TypeError(f"{found!r} is not a Channel subclass")
    declared = getattr(found, "type", None)
    if declared != kind:
        raise TypeError(f"{found.__qualname__}.type is {declared!r}, not {kind!r}")
    return found


@cache
def _discovered() -> tuple[dict[str, ChannelType], dict[str, str]]:
    """The built-in types and the installed plugins; and each plugin that failed to load, with why."""
    found = {kind: checked(kind, load(reference)) for kind, reference in BUILT_IN.items()}
    failed: dict[str, str] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name in BUILT_IN:
            log.warning("channel plugin %s (%s) ignored: %s is a built-in type", point.value, point.name, point.name)
            continue
        try:
            found[point.name] = checked(point.name, point.load())
        except Exception as exc:  # a broken plugin must not take the other channels down with it
            failed[point.name] = f"{point.value}: {type(exc).__name__}: {exc}"
            log.warning("channel plugin %s cannot be loaded: %s", point.name, failed[point.name])
    return found, failed


def channel_types() -> dict[str, ChannelType]:
    """Every channel class, by its ``type``."""
    found, _ = _discovered()
    return {**found, **_registered}


def load_failure(kind: str) -> str | None:
    """Why the plugin for ``kind`` could not be loaded; None when it loaded or there is none."""
    return _discovered()[1].get(kind)


def register(cls: ChannelType) -> ChannelType:
    """Add a channel type at run time (usable as a class decorator); it replaces any type of that name."""
    kind = getattr(cls, "type", None)
    if not isinstance(kind, str):
        raise TypeError(f"{cls!r} has no type")
    _registered[kind] = checked(kind, cls)
    return cls


def unregister(kind: str) -> None:
    """Forget a type added by ``register``."""
    _registered.pop(kind, None)


def rescan() -> None:
    """Look for installed plugins again (after installing one into a running process)."""
    _discovered.cache_clear()


def emulator_types() -> dict[str, type[Emulator]]:
    """The sandbox's emulator of each type that names one."""
    return {kind: load(cls.emulator) for kind, cls in channel_types().items() if cls.emulator}


def inbound_webhooks() -> dict[str, type[InboundWebhook]]:
    """The inbound webhook of each type that has one, for the API to mount."""
    return {kind: cls.inbound for kind, cls in channel_types().items() if cls.inbound is not None}


def subscriber_kinds() -> dict[str, str]:
    """The kind of subscriber (``email``, ``phone``) of each type that takes subscribers."""
    return {kind: cls.subscriber_kind for kind, cls in channel_types().items() if cls.subscriber_kind}
