"""Helpers the tests import; the fixtures that use them live in ``tests/conftest.py``.

backends      PostgreSQL and RabbitMQ at their test URLs, and the brokers the tests run on
cluster       Celery workers on the sandbox, and readers of what they recorded in the delivery log
input         a ``send`` command line, and the check that bad input was refused before anything was sent
lifecycle     a cluster on a delivery log of its own, for the reminder and maintenance tests
settings      settings made in this process from a dict (webhook channels by name), for the unit tests
subscribers   API tokens and subscriber channels for the audience tests
"""

from pathlib import Path

#: the source checkout (templates/, config/)
ROOT = Path(__file__).resolve().parents[2]
