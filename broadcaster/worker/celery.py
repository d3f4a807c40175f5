"""``celery -A broadcaster.worker``: the app, configured from the broadcaster's settings when Celery imports it."""

from __future__ import annotations

import sys

from broadcaster.core.errors import ConfigError
from broadcaster.delivery.queue import app, get_settings
from broadcaster.worker import schedule, signals

__all__ = ["app", "schedule", "signals"]

try:
    get_settings()
except ConfigError as exc:
    print(f"broadcaster: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
