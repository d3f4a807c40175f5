"""The unit tests run in this process on what they are given: no server, no fixture of ``tests/conftest.py``
(none is autouse), and no ``BROADCASTER_*`` configuration of the machine's."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def no_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings made by a test read no ``BROADCASTER_*`` variable (``BROADCASTER_CONFIG`` included)."""
    for name in [name for name in os.environ if name.startswith("BROADCASTER_")]:
        monkeypatch.delenv(name)
