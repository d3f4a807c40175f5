"""Fixtures for the delivery layer's unit tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from broadcaster.settings import Settings

SECRET = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM="


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Settings with webhook channels named by keyword (``blog={...}``: that channel's own keys), guards kept in
    this process, no broker, nothing read from the environment."""

    def make(**channels: dict[str, Any]) -> Settings:
        tables = {
            name: {"type": "webhook", "url": f"https://{name}.example.com/hook", "secret": SECRET, **keys}
            for name, keys in (channels or {"blog": {}}).items()
        }
        return Settings.model_validate(
            {"broker_url": "", "redis_url": "", "database_url": "sqlite://", "channels": tables}
        )

    return make
