"""Durations and rate limits as configuration writes them (broadcaster.core.units)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel, ValidationError

from broadcaster.core.units import (
    Duration,
    RateLimit,
    RateLimitSetting,
    format_duration,
    parse_duration,
    parse_rate_limit,
)


class Channel(BaseModel):
    """A configuration table with a duration and a rate limit, as the channel and retry settings have."""

    timeout: Duration
    rate_limit: RateLimitSetting = None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1d", timedelta(days=1)),
        (" 2 h ", timedelta(hours=2)),
        ("0.5m", timedelta(seconds=30)),
        ("0s", timedelta(0)),
        (0, timedelta(0)),
        (timedelta(minutes=3), timedelta(minutes=3)),
    ],
)
def test_a_duration_is_read_in_any_unit_with_spaces_around_it(text: str | int | timedelta, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_a_bad_duration_says_how_to_write_one() -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration("10 minutes")
    assert str(caught.value) == "not a duration: '10 minutes' (write it like 45s, 30m, 6h or 250ms)"


def test_a_negative_number_of_seconds_is_refused() -> None:
    with pytest.raises(ValueError, match="^a duration cannot be negative$"):
        parse_duration(-3)


def test_true_is_not_one_second() -> None:
    """A TOML ``timeout = true`` is a mistake, not a duration of 1s."""
    with pytest.raises(ValueError, match="not a duration: True"):
        parse_duration(True)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(days=2), "2d"),
        (timedelta(hours=3), "3h"),
        (timedelta(minutes=90), "90m"),
        (timedelta(seconds=45), "45s"),
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(seconds=90.5), "90500ms"),
        (timedelta(0), "0ms"),
    ],
)
def test_a_duration_is_written_in_the_largest_unit_that_divides_it(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value


def test_a_rate_limit_spreads_its_count_over_its_period() -> None:
    assert parse_rate_limit("10/2s") == RateLimit(10, 2.0)
    assert RateLimit(10, 2.0).interval == 0.2
    assert parse_rate_limit(" 5 / m ") == RateLimit(5, 60.0)
    assert parse_rate_limit("2/0.5s") == RateLimit(2, 0.5)
    assert parse_rate_limit(None) is None


@pytest.mark.parametrize("text", ["1/s", "300/15m", "2/500ms", "86400/1d"])
def test_a_rate_limit_is_written_back_so_that_it_reads_the_same(text: str) -> None:
    limit = parse_rate_limit(text)
    assert limit is not None
    assert parse_rate_limit(str(limit)) == limit


def test_rate_limits_are_written_with_their_period_s_unit() -> None:
    assert str(RateLimit(1, 1.0)) == "1/1s"
    assert str(RateLimit(300, 900.0)) == "300/15m"


@pytest.mark.parametrize("text", ["0/s", "s", "1/x", "1/-1s", "1.5/s", "fast"])
def test_a_bad_rate_limit_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_rate_limit(text)
    assert str(caught.value) == f"not a rate limit: {text!r} (write it like 1/s or 300/15m)"


def test_settings_read_and_write_durations_and_rate_limits_as_text() -> None:
    channel = Channel.model_validate({"timeout": "90s", "rate_limit": "300/15m"})
    assert channel.timeout == timedelta(seconds=90)
    assert channel.rate_limit == RateLimit(300, 900.0)
    assert channel.model_dump() == {"timeout": "90s", "rate_limit": "300/15m"}
    assert Channel.model_validate({"timeout": 5}).model_dump() == {"timeout": "5s", "rate_limit": None}


def test_a_bad_duration_in_settings_is_a_validation_error_with_the_hint() -> None:
    with pytest.raises(ValidationError, match=r"not a duration: 'soon' \(write it like 45s, 30m, 6h or 250ms\)"):
        Channel.model_validate({"timeout": "soon"})
