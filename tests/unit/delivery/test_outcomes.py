"""What an attempt's outcome makes of its delivery (broadcaster.delivery.outcomes.judge), and its backoff."""

from __future__ import annotations

from datetime import timedelta

import pytest

from broadcaster.core.errors import PermanentError, RateLimited, TransientError
from broadcaster.delivery.outcomes import DELIVERED, backoff_delay, judge, spent
from broadcaster.settings import RetrySettings
from broadcaster.store.models import DeliveryStatus, Outcome

RETRY = RetrySettings(max_attempts=3, backoff=timedelta(seconds=2), backoff_max=timedelta(seconds=5))
SAMPLES = 400


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 2.0), (2, 4.0), (3, 5.0), (10, 5.0)])
def test_backoff_doubles_from_backoff_up_to_backoff_max_with_full_jitter(attempt: int, ceiling: float) -> None:
    """Each delay is uniform in [0, min(backoff_max, backoff * 2^(attempt-1))]: never above it, and spread over it."""
    delays = [backoff_delay(RETRY, attempt) for _ in range(SAMPLES)]
    assert all(0 <= d <= ceiling for d in delays)
    assert max(delays) > 0.8 * ceiling and min(delays) < 0.2 * ceiling


def test_a_success_is_delivered() -> None:
    assert judge(RETRY, 1, None, None) == DELIVERED
    assert (DELIVERED.outcome, DELIVERED.status, DELIVERED.error, DELIVERED.retry_in) == (
        Outcome.delivered,
        DeliveryStatus.delivered,
        None,
        None,
    )


def test_a_permanent_error_fails_at_once_whatever_the_budget() -> None:
    verdict = judge(RETRY, 1, PermanentError("no such number"), "no such number")
    assert (verdict.outcome, verdict.status, verdict.error, verdict.retry_in) == (
        Outcome.permanent,
        DeliveryStatus.failed,
        "no such number",
        None,
    )


def test_a_transient_error_is_retried_after_a_backoff_within_the_budget() -> None:
    verdict = judge(RETRY, 2, TransientError("503"), "503")
    assert (verdict.outcome, verdict.status, verdict.error) == (Outcome.transient, DeliveryStatus.retrying, "503")
    assert verdict.retry_in is not None and 0 <= verdict.retry_in <= 4.0


def test_the_last_attempt_of_the_budget_gives_up_and_says_so() -> None:
    verdict = judge(RETRY, 3, TransientError("503"), "503")
    assert (verdict.outcome, verdict.status, verdict.retry_in) == (Outcome.transient, DeliveryStatus.failed, None)
    assert verdict.error == "503 (gave up after 3 attempts)"


def test_a_rate_limit_waits_at_least_its_retry_after() -> None:
    """Retry-After beyond the backoff wins; the outcome is told apart from other transient failures."""
    verdict = judge(RETRY, 1, RateLimited("429", retry_after=30.0), "429")
    assert (verdict.outcome, verdict.status, verdict.retry_in) == (Outcome.rate_limited, DeliveryStatus.retrying, 30.0)


def test_a_short_retry_after_never_shortens_the_backoff() -> None:
    """Retry-After 0 still leaves the backoff's delay; at the end of the budget a rate limit gives up too."""
    delays = [judge(RETRY, 3 - 1, RateLimited("429", retry_after=0.0), "429").retry_in for _ in range(SAMPLES)]
    assert all(d is not None and 0 <= d <= 4.0 for d in delays) and max(d or 0 for d in delays) > 1.0
    assert judge(RETRY, 3, RateLimited("429", retry_after=1.0), "429").status == DeliveryStatus.failed


def test_a_rate_limit_without_retry_after_backs_off() -> None:
    verdict = judge(RETRY, 1, RateLimited("429"), "429")
    assert verdict.retry_in is not None and 0 <= verdict.retry_in <= 2.0


@pytest.mark.parametrize(("used", "expected"), [(0, False), (2, False), (3, True), (4, True)])
def test_the_budget_is_spent_at_max_attempts(used: int, expected: bool) -> None:
    assert spent(RETRY, used) is expected
