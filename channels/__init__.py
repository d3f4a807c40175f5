"""Channel adapters: one module per channel type, each with one ``Channel`` subclass.

A new channel is a new module here (plus its templates and tests); it is found by its ``type``.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from channels.base import Channel, ChannelConfig, Message, SendContext, SendResult

__all__ = ["Channel", "ChannelConfig", "Message", "SendContext", "SendResult", "channel_types"]


@cache
def channel_types() -> dict[str, type[Channel]]:  # type: ignore[type-arg]
    """Every channel class in this package, by its ``type``."""
    found: dict[str, type[Channel]] = {}  # type: ignore[type-arg]
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Channel)
                and value.__module__ == module.__name__
                and "type" in vars(value)
            ):
                found[value.type] = value
    return found
