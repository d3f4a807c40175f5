"""Which step of a maintenance window is due, and whether it is posted (``next_step``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broadcaster.domain.maintenance import ANNOUNCED, COMPLETED, SCHEDULED, STARTED, UPCOMING, next_step
from broadcaster.store.models import Maintenance

STARTS = datetime(2026, 5, 1, 14, 0, tzinfo=UTC)
ENDS = STARTS + timedelta(hours=2)
REMIND = STARTS - timedelta(hours=1)


def window(step: int, remind_at: datetime | None = REMIND) -> Maintenance:
    """A window from 14:00 to 16:00 UTC, reminded at 13:00, at ``step`` (not stored: nothing here needs a log)."""
    return Maintenance(step=step, starts_at=STARTS, ends_at=ENDS, remind_at=remind_at)


def at(hours: float) -> datetime:
    return STARTS + timedelta(hours=hours)


@pytest.mark.parametrize("step", [SCHEDULED, ANNOUNCED])
def test_nothing_is_due_before_the_reminder(step: int) -> None:
    assert next_step(window(step), at(-1.5)) is None


def test_the_reminder_is_posted_once_its_time_has_come() -> None:
    assert next_step(window(ANNOUNCED), REMIND) == (UPCOMING, True)
    assert next_step(window(ANNOUNCED), at(-0.01)) == (UPCOMING, True)


def test_a_late_reminder_is_skipped_once_the_start_has_come() -> None:
    """The step is taken (so the start follows) but not posted: a reminder after the start would be noise."""
    assert next_step(window(ANNOUNCED), STARTS) == (UPCOMING, False)
    assert next_step(window(ANNOUNCED), at(5)) == (UPCOMING, False)


def test_a_window_without_a_reminder_waits_for_its_start() -> None:
    assert next_step(window(ANNOUNCED, remind_at=None), at(-0.01)) is None
    assert next_step(window(ANNOUNCED, remind_at=None), STARTS) == (UPCOMING, False)


def test_the_start_is_posted_at_the_start() -> None:
    assert next_step(window(UPCOMING), at(-0.01)) is None
    assert next_step(window(UPCOMING), STARTS) == (STARTED, True)


def test_the_end_is_posted_at_the_end() -> None:
    assert next_step(window(STARTED), at(1.99)) is None
    assert next_step(window(STARTED), ENDS) == (COMPLETED, True)


def test_complete_ends_a_started_window_early() -> None:
    assert next_step(window(STARTED), at(0.5), complete=True) == (COMPLETED, True)


def test_complete_does_not_skip_the_start() -> None:
    """Completing a window whose start no pass has posted yet posts the start first."""
    assert next_step(window(UPCOMING), at(0.5), complete=True) == (STARTED, True)


def test_a_completed_window_has_nothing_more_to_post() -> None:
    assert next_step(window(COMPLETED), at(10)) is None
    assert next_step(window(COMPLETED), at(10), complete=True) is None


def test_a_pass_that_runs_late_takes_one_step_at_a_time_in_order() -> None:
    """Hours after the end, each call gives the next step only: a late beat catches up in order."""
    late = at(10)
    taken = []
    current = window(ANNOUNCED)
    while (due := next_step(current, late)) is not None:
        taken.append(due)
        current = window(due[0])
    assert taken == [(UPCOMING, False), (STARTED, True), (COMPLETED, True)]
