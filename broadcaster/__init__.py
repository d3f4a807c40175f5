"""Write one incident update; deliver it to every channel, with retries and a durable delivery log."""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Broadcaster"]

if TYPE_CHECKING:
    from broadcaster.client import Broadcaster


def __getattr__(name: str) -> Any:
    # Lazy, so that importing one of the package's modules (the core, the settings) loads no Celery app.
    if name == "Broadcaster":
        from broadcaster.client import Broadcaster

        return Broadcaster
    raise AttributeError(f"module 'broadcaster' has no attribute {name!r}")
