"""The beat's schedule: a reminder pass and a maintenance pass every ``[reminders] check_every``."""

from __future__ import annotations

from typing import Any

from celery import Celery

from broadcaster.delivery.queue import app, get_settings

#: the beat's tasks, by name (broadcaster.worker.tasks defines them)
REMIND, MAINTENANCE = "broadcaster.remind", "broadcaster.maintenance"


@app.on_after_configure.connect
def add_passes(sender: Celery, **_: Any) -> None:
    every = get_settings().reminders.check_every.total_seconds()
    # A pass that waited longer than its period is superseded by the next one (which catches up anyway).
    for name in (REMIND, MAINTENANCE):
        sender.add_periodic_task(every, sender.signature(name), name=name, expires=max(1.0, every))


if app.configured:  # configured before this module was imported: on_after_configure has been sent already
    add_passes(app)
