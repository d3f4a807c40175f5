"""The broadcaster's errors, in one place.

    BroadcasterError
    ├── InputError            bad input or configuration; exit 2, nothing sent; ``field`` names the field
    │   ├── ConfigError       a configuration file, key or variable is wrong
    │   └── RenderError       a template failed; names the template and line
    └── DeliveryError         raised by a channel adapter for one send
        ├── TransientError    worth retrying with backoff (5xx, timeouts, refused connections)
        │   └── RateLimited   retry no sooner than ``retry_after`` seconds
        └── PermanentError    retrying cannot help (bad credentials, invalid recipient); ``recipient``
                              says "invalid" or "unsubscribed" when the recipient is gone

Adapters translate their SDK's exceptions into ``DeliveryError`` at their boundary
(``raise TransientError(...) from exc``); nothing else leaves a channel's ``send``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import ValidationError


class BroadcasterError(Exception):
    """Base of every error the broadcaster raises on purpose."""


class InputError(BroadcasterError):
    """Bad input: reported as one line, exit code 2, nothing sent.

    ``field`` names the offending field when there is one (dotted when nested: ``components.0``), for programs
    (the HTTP API's problem names it); the message names it too, for people (``components: at most 100``).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    @classmethod
    def from_validation(cls, exc: ValidationError, prefix: str = "") -> Self:
        """The first error of a pydantic validation as one line naming its field: ``field: message``."""
        field, message = field_and_message(exc.errors(include_url=False, include_input=False)[0])
        # A nested model's error passed up already names its own, deeper field ("channels.ops.url: ...").
        named = not field or message.startswith(f"{field}.")
        return cls(f"{prefix}{message if named else f'{field}: {message}'}", field=field or None)


def field_and_message(error: Mapping[str, Any], skip: int = 0) -> tuple[str, str]:
    """One pydantic error as (field, message): its location dotted after the first ``skip`` parts ("" for the
    whole input), and its message without the "Value error, " pydantic puts before a validator's own."""
    field = ".".join(str(part) for part in tuple(error.get("loc", ()))[skip:])
    return field, str(error.get("msg", "")).removeprefix("Value error, ")


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


#: what a permanent error may say about its recipient: the address is no good ("invalid": a mailbox refused at
#: RCPT, a number the provider calls invalid), or its owner opted out with the provider ("unsubscribed")
RecipientVerdict = Literal["invalid", "unsubscribed"]


class PermanentError(DeliveryError):
    """The provider will never accept this send; ``recipient`` says when that is the recipient's doing."""

    def __init__(self, message: str, recipient: RecipientVerdict | None = None) -> None:
        super().__init__(message)
        self.recipient = recipient
