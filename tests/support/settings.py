"""Settings made in this process from a dict, as a configuration file would give them (for the unit tests)."""

from __future__ import annotations

from typing import Any

from broadcaster.settings import Settings

#: a Standard Webhooks secret, as ``broadcaster secret`` makes them
SECRET = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM="


def webhook(name: str, **keys: Any) -> dict[str, Any]:
    """A ``[channels.NAME]`` table of a webhook at ``https://NAME.example.com/hook``."""
    return {"type": "webhook", "url": f"https://{name}.example.com/hook", "secret": SECRET, **keys}


def settings_with(*names: str, disabled: tuple[str, ...] = (), **config: Any) -> Settings:
    """Settings with a webhook channel for each of ``names`` (those in ``disabled`` turned off) and ``config``."""
    channels = {name: webhook(name, enabled=name not in disabled) for name in names}
    return Settings.model_validate({"channels": channels, **config})
