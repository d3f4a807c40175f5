"""The lifecycle's shared helpers: times as operators write them, durations as people say them, and who is
a responder (broadcaster.domain.lifecycle)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from broadcaster.core.errors import InputError
from broadcaster.domain.lifecycle import at_text, customer_channels, human_duration, parse_when, responder_channels
from tests.support.settings import settings_with

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+2h", datetime(2026, 5, 1, 14, 0, tzinfo=UTC)),
        ("+ 30m", datetime(2026, 5, 1, 12, 30, tzinfo=UTC)),
        ("+1d", datetime(2026, 5, 2, 12, 0, tzinfo=UTC)),
        ("2026-05-01T14:30Z", datetime(2026, 5, 1, 14, 30, tzinfo=UTC)),
        ("2026-05-01T14:30", datetime(2026, 5, 1, 14, 30, tzinfo=UTC)),
        (" 2026-05-01 14:30 ", datetime(2026, 5, 1, 14, 30, tzinfo=UTC)),
        ("2026-05-01T16:30+02:00", datetime(2026, 5, 1, 14, 30, tzinfo=UTC)),
    ],
)
def test_a_time_is_iso_8601_in_utc_or_a_duration_from_now(text: str, expected: datetime) -> None:
    when = parse_when(text, NOW)
    assert when == expected
    assert when.tzinfo == UTC


@pytest.mark.parametrize("text", ["tomorrow", "+soon", "+-1h", "14:30 next Friday", ""])
def test_a_time_that_is_not_one_names_the_option_and_shows_how_to_write_it(text: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_when(text, NOW, "--starts")
    assert str(caught.value) == (
        f"--starts: {text!r} is not a time: write it like 2026-05-01T14:30Z (UTC without an offset) or +2h"
    )


def test_a_relative_time_counts_from_the_real_clock_without_a_now() -> None:
    before = datetime.now(UTC)
    when = parse_when("+1h")
    assert before + timedelta(hours=1) <= when <= datetime.now(UTC) + timedelta(hours=1)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=45), "45s"),
        (timedelta(seconds=59.9), "59s"),
        (timedelta(minutes=32), "32m"),
        (timedelta(hours=1, minutes=5, seconds=30), "1h 5m"),
        (timedelta(hours=1, seconds=7), "1h"),
        (timedelta(days=2, hours=3), "2d 3h"),
        (timedelta(days=1), "1d"),
        (timedelta(seconds=-5), "0s"),
    ],
)
def test_a_duration_reads_as_people_say_it(value: timedelta, text: str) -> None:
    """Seconds only under a minute; a time already passed is 0s."""
    assert human_duration(value) == text


def test_a_time_is_shown_in_utc_to_the_minute() -> None:
    assert at_text(datetime(2026, 5, 1, 16, 30, 59, tzinfo=timezone(timedelta(hours=2)))) == "2026-05-01 14:30 UTC"


def test_responders_are_the_reminder_and_escalation_channels() -> None:
    settings = settings_with("ops", "pager", "blog", reminders={"channels": ["ops"], "escalate": ["pager"]})
    assert responder_channels(settings) == {"ops", "pager"}


def test_customers_are_every_enabled_channel_that_is_not_a_responder_s() -> None:
    settings = settings_with(
        "ops", "pager", "blog", "x", "status", disabled=("x",), reminders={"channels": ["ops"], "escalate": ["pager"]}
    )
    assert customer_channels(settings, []) == ["blog", "status"]


def test_configured_customer_channels_are_taken_as_they_are() -> None:
    settings = settings_with("ops", "blog", "x", disabled=("x",), reminders={"channels": ["ops"]})
    assert customer_channels(settings, ["x", "ops"]) == ["x", "ops"]
