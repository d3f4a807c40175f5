"""The worker: Celery tasks (``tasks``, ``post_update``), the signals a worker process answers (``signals``) and
the beat's schedule (``schedule``), all on the app of broadcaster.delivery.queue.

``celery -A broadcaster.worker worker`` finds the configured app in ``broadcaster.worker.celery``; ``broadcaster
worker`` configures the same app from its own options. Importing this package reads no settings.
"""
