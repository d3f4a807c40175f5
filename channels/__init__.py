"""Channel adapters: one package per channel type (``channels/<type>/``), each with one ``Channel`` subclass.

A channel package holds its adapter (``__init__.py``), its pure helpers in their own modules, its inbound
webhook if it has one and its provider's emulator (``emulator.py``); it imports only ``broadcaster.core``,
``channels.base`` and the shared helpers beside it (``fitting``, ``emulation``). The types are found through
``channels.registry`` (built-in ones, and plugins of the ``broadcaster.channels`` entry-point group).
"""

from __future__ import annotations

from channels.base import Channel, ChannelConfig, Message, SendContext, SendResult
from channels.registry import channel_types, register

__all__ = ["Channel", "ChannelConfig", "Message", "SendContext", "SendResult", "channel_types", "register"]
