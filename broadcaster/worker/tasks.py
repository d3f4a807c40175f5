"""The delivery tasks and the beat's passes, on the app of broadcaster.delivery.queue (which sends them by name)."""

from __future__ import annotations

from broadcaster import service
from broadcaster.delivery.attempt import run_attempt
from broadcaster.delivery.batch import BatchNext, run_batch
from broadcaster.delivery.queue import DELIVER, DELIVER_BATCH, app, enqueue, get_settings, later
from broadcaster.worker import post_update
from broadcaster.worker.schedule import MAINTENANCE, REMIND

__all__ = ["deliver", "deliver_batch", "maintenance_pass", "post_update", "remind_pass"]


@app.task(name=DELIVER, acks_late=True, ignore_result=True)
def deliver(delivery_id: str) -> None:
    """Make one attempt at a delivery; schedule the next one when it must be retried or wait."""
    step = run_attempt(get_settings(), delivery_id)
    enqueue(step.enqueue)
    if step.retry_in is not None:
        later(delivery_id, step.retry_in)


@app.task(name=DELIVER_BATCH, acks_late=True, ignore_result=True)
def deliver_batch(delivery_ids: list[str]) -> None:
    """Start one attempt at each of these deliveries together; each one that must wait or retry goes on alone."""
    run_batch(get_settings(), delivery_ids, follow_up)


def follow_up(step: BatchNext) -> None:
    """Hand on what a batch could not finish: a delivery to retry or wait for runs alone, by countdown."""
    for delivery_id, seconds in step.later.items():
        later(delivery_id, seconds)
    enqueue(step.enqueue)


@app.task(name=REMIND, ignore_result=True, acks_late=True)
def remind_pass() -> list[str]:
    """One reminder pass on the beat schedule; passes in several workers or beats never send twice."""
    return service.remind(get_settings())


@app.task(name=MAINTENANCE, ignore_result=True, acks_late=True)
def maintenance_pass() -> list[str]:
    """One maintenance pass on the beat schedule (every ``[reminders] check_every``)."""
    return service.advance_maintenance(get_settings())
