"""Durations (``45s``, ``30m``, ``250ms``) and rate limits (``1/s``, ``300/15m``) as written in configuration."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: Any) -> timedelta:
    """Read ``45s``/``30m``/``6h``/``250ms`` (or a number of seconds) as a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"not a duration: {value!r} (write it like 45s, 30m, 6h or 250ms)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration)]


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` sends per ``period`` seconds."""

    count: int
    period: float

    @property
    def interval(self) -> float:
        return self.period / self.count

    def __str__(self) -> str:
        return f"{self.count}/{format_duration(timedelta(seconds=self.period))}"


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_rate_limit(value: Any) -> RateLimit | None:
    if value is None or isinstance(value, RateLimit):
        return value
    match = _RATE.match(str(value))
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"not a rate limit: {value!r} (write it like 1/s or 300/15m)")
    amount = float(match.group(2) or 1)
    return RateLimit(int(match.group(1)), amount * _UNITS[match.group(3)])


RateLimitSetting = Annotated[
    RateLimit | None, BeforeValidator(parse_rate_limit), PlainSerializer(lambda r: str(r) if r else None)
]
