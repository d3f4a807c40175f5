"""The broadcaster's errors, in one place.

    BroadcasterError
    ├── InputError            bad input or configuration; exit 2, nothing sent
    │   ├── ConfigError       a configuration file, key or variable is wrong
    │   └── RenderError       a template failed; names the template and line
    └── DeliveryError         raised by a channel adapter for one send
        ├── TransientError    worth retrying with backoff (5xx, timeouts, refused connections)
        │   └── RateLimited   retry no sooner than ``retry_after`` seconds
        └── PermanentError    retrying cannot help (bad credentials, invalid recipient)

Adapters translate their SDK's exceptions into ``DeliveryError`` at their boundary
(``raise TransientError(...) from exc``); nothing else leaves a channel's ``send``.
"""

from __future__ import annotations


class BroadcasterError(Exception):
    """Base of every error the broadcaster raises on purpose."""


class InputError(BroadcasterError):
    """Bad input: reported as one line, exit code 2, nothing sent."""


class ConfigError(InputError):
    """Configuration that cannot be used."""


class RenderError(InputError):
    """A template that cannot be rendered."""


class DeliveryError(BroadcasterError):
    """One send to one target failed."""


class TransientError(DeliveryError):
    """The provider may accept the same send later."""


class RateLimited(TransientError):
    """The provider asked us to wait ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    """The provider will never accept this send."""
