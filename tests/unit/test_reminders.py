"""Reminder levels and the channels each level goes to (the pure parts of broadcaster.domain.reminders)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from broadcaster.core.errors import InputError
from broadcaster.domain.reminders import Silence, check_channels, holding_channels, reminder_channels
from tests.support.settings import settings_with

LATEST = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CADENCE = timedelta(minutes=15)


def silence(first_due: datetime = LATEST + CADENCE) -> Silence:
    """A critical incident whose latest update was at LATEST, reminded every 15 minutes of silence."""
    return Silence("01INCIDENT", "01UPDATE", "investigating", "critical", LATEST, first_due, CADENCE)


@pytest.mark.parametrize(
    ("minutes", "level"),
    [(0, 0), (14, 0), (15, 1), (29, 1), (30, 2), (44, 2), (45, 3), (61, 4)],
)
def test_silence_counts_one_level_per_period_from_the_next_update_due(minutes: int, level: int) -> None:
    assert silence().level(LATEST + timedelta(minutes=minutes)) == level


def test_a_promised_next_update_moves_the_first_reminder() -> None:
    """An update that promised the next one by 13:00 makes 13:00 level 1, whatever the cadence says."""
    promised = silence(first_due=datetime(2026, 5, 1, 13, 0, tzinfo=UTC))
    assert promised.level(datetime(2026, 5, 1, 12, 59, tzinfo=UTC)) == 0
    assert promised.level(datetime(2026, 5, 1, 13, 0, tzinfo=UTC)) == 1
    assert promised.level(datetime(2026, 5, 1, 13, 15, tzinfo=UTC)) == 2


def test_each_level_is_due_one_period_after_the_last() -> None:
    assert [silence().due(level) for level in (1, 2, 3)] == [
        datetime(2026, 5, 1, 12, 15, tzinfo=UTC),
        datetime(2026, 5, 1, 12, 30, tzinfo=UTC),
        datetime(2026, 5, 1, 12, 45, tzinfo=UTC),
    ]


def test_the_first_level_reminds_the_responders_and_later_ones_escalate() -> None:
    settings = settings_with("ops", "pager", "blog", reminders={"channels": ["ops"], "escalate": ["pager"]})
    assert reminder_channels(settings, 1) == ["ops"]
    assert reminder_channels(settings, 2) == ["ops", "pager"]
    assert reminder_channels(settings, 5) == ["ops", "pager"]


def test_a_channel_both_reminded_and_escalated_to_gets_each_reminder_once() -> None:
    settings = settings_with("ops", reminders={"channels": ["ops"], "escalate": ["ops"]})
    assert reminder_channels(settings, 2) == ["ops"]


def test_missing_and_disabled_reminder_channels_are_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_with("ops", "pager", disabled=("pager",), reminders={"channels": ["ops", "gone"],
                             "escalate": ["pager"]})  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="broadcaster.domain.reminders"):
        assert reminder_channels(settings, 2) == ["ops"]
    assert caplog.messages == ["reminders.channels: gone, pager not configured or disabled; skipped"]


def test_holding_statements_go_to_the_customers() -> None:
    settings = settings_with("ops", "pager", "blog", "x", reminders={"channels": ["ops"], "escalate": ["pager"]})
    assert holding_channels(settings) == ["blog", "x"]
    chosen = settings_with("ops", "blog", "x", reminders={"channels": ["ops"], "holding_channels": ["x"]})
    assert holding_channels(chosen) == ["x"]


def test_a_reminder_channel_that_is_not_configured_is_bad_input() -> None:
    settings = settings_with("ops", "blog", reminders={"channels": ["ops"], "holding_channels": ["status"]})
    with pytest.raises(InputError) as caught:
        check_channels(settings)
    assert str(caught.value) == "[reminders] names channel 'status', which is not configured (configured: blog, ops)"


def test_without_any_channel_the_error_says_none_is_configured() -> None:
    with pytest.raises(InputError, match=r"^\[reminders\] names channel 'ops', .*\(configured: none\)$"):
        check_channels(settings_with())


def test_configured_reminder_channels_pass_the_check() -> None:
    check_channels(settings_with("ops", "pager", reminders={"channels": ["ops"], "escalate": ["pager"]}))
