"""Secrets kept out of the delivery log (broadcaster.delivery.outcomes.redact)."""

from __future__ import annotations

from collections.abc import Callable

from broadcaster.delivery.outcomes import redact
from broadcaster.settings import Settings
from channels.webhook import WebhookConfig


def blog(make_settings: Callable[..., Settings]) -> tuple[WebhookConfig, str]:
    config = make_settings().channels["blog"]
    assert isinstance(config, WebhookConfig)
    return config, config.secret.get_secret_value()


def test_a_secret_value_is_replaced(make_settings: Callable[..., Settings]) -> None:
    config, secret = blog(make_settings)
    assert redact(f"signing with {secret} failed", config) == "signing with *** failed"


def test_text_without_secrets_and_channels_unknown_here_are_left_alone(make_settings: Callable[..., Settings]) -> None:
    config, secret = blog(make_settings)
    assert redact("503 Service Unavailable", config) == "503 Service Unavailable"
    assert redact(f"signing with {secret} failed", None) == f"signing with {secret} failed"
