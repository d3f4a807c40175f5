"""The one retry-budget lookup: ``Settings.retry_for``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from broadcaster.settings import Settings


def test_a_channel_without_overrides_has_the_global_retry(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    assert settings.retry_for("blog") == settings.retry


def test_a_channels_overrides_replace_only_their_keys(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(blog={"retry": {"max_attempts": 9}}, status={})
    assert settings.retry_for("blog").max_attempts == 9
    assert settings.retry_for("blog").backoff == settings.retry.backoff == timedelta(seconds=2)
    assert settings.retry_for("status") == settings.retry
    assert settings.retry.max_attempts == 5  # the global table is not changed by a channel's copy


def test_a_channel_this_configuration_lacks_has_the_global_retry(make_settings: Callable[..., Settings]) -> None:
    """A delivery made by a worker configured with other channels still gets a budget, the global one."""
    settings = make_settings()
    assert settings.retry_for("not-here") == settings.retry
