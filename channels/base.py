"""The one small interface every channel adapter implements, and what the broadcaster offers a channel.

A channel tells the core what it needs to know through ``Channel``'s class attributes: its keys (``Config``),
its template parts, whom it reaches with ``audience = "subscribers"`` (``subscriber_kind``), its provider's
inbound webhook (``inbound``, an ``InboundWebhook``, which may change subscribers only through an ``Inbox``)
and its emulator for the sandbox (``emulator``). Which permanent errors mean "this recipient is gone" it says
with ``PermanentError(..., recipient=...)`` (``broadcaster.core.errors``).
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from broadcaster.core.units import Duration, RateLimitSetting


class RetryOverrides(BaseModel):
    """A channel's own ``[retry]`` keys; unset keys take the global ones."""

    model_config = ConfigDict(extra="forbid")
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    backoff: Duration | None = None
    backoff_max: Duration | None = None


class CircuitSettings(BaseModel):
    """After ``failures`` transient failures in a row the channel rests for ``cooldown``; then one probe."""

    model_config = ConfigDict(extra="forbid")
    failures: int = Field(default=5, ge=1)
    cooldown: Duration = timedelta(minutes=1)


class ChannelConfig(BaseModel):
    """Keys every ``[channels.NAME]`` table takes; each channel type adds its own."""

    model_config = ConfigDict(extra="forbid")
    type: str
    enabled: bool = True
    fallback: list[str] = []
    fallback_after: Duration = timedelta(minutes=5)
    rate_limit: RateLimitSetting = None
    retry: RetryOverrides = RetryOverrides()
    circuit: CircuitSettings = CircuitSettings()
    #: at most this many sends at once per worker process, each over a connection kept open between sends
    #: (an SMTP relay may limit connections per client); unset: ``[delivery] in_flight``
    connections: int | None = Field(default=None, ge=1, le=256)


class HttpChannelConfig(ChannelConfig):
    """A channel that talks to a provider's HTTP API."""

    api_base_url: str | None = None
    timeout: Duration = timedelta(seconds=10)


class Message(BaseModel):
    """One channel's rendering of an update: its text parts, structured data, size and warnings."""

    parts: dict[str, str]
    data: dict[str, Any] = {}
    size: dict[str, Any] = {}
    warnings: list[str] = []


#: the key in a delivery's ``state`` holding a subscriber's signed one-click unsubscribe link
UNSUBSCRIBE_STATE = "unsubscribe_url"
#: what templates see as ``unsubscribe_url``: an adapter puts each subscriber's own link in its place
UNSUBSCRIBE_MARK = "{unsubscribe_url}"


class SendContext(BaseModel):
    """What a send knows about the delivery it serves; ``state`` persists across attempts."""

    delivery_id: str
    attempt: int
    state: dict[str, Any] = {}

    @property
    def unsubscribe_url(self) -> str | None:
        """The recipient's one-click unsubscribe link when it is a subscriber (set when its audience was resolved)."""
        url = self.state.get(UNSUBSCRIBE_STATE)
        return url if isinstance(url, str) else None


class SendResult(BaseModel):
    provider_id: str | None = None
    note: str | None = None


#: the kinds of subscriber there are: an email address, or an E.164 phone number
SubscriberKind = Literal["email", "phone"]

C = TypeVar("C", bound=ChannelConfig)


class Channel(ABC, Generic[C]):
    """A channel adapter: renders into its own shape and sends one message to one target.

    ``send`` returns a ``SendResult`` or raises a ``broadcaster.core.errors.DeliveryError``;
    its SDK's own exceptions never escape it.
    """

    type: ClassVar[str]
    Config: ClassVar[builtins.type[ChannelConfig]]
    #: template part name -> file name under ``templates/<type>/<event>/`` (``.j2`` appended)
    templates: ClassVar[dict[str, str]]
    #: a plugin's own templates, laid out as ``templates/`` is (``<type>/<event>/<part>.j2``); a part found in
    #: neither renders from the generic default (``templates/_generic/``)
    templates_dir: ClassVar[Path | None] = None
    #: whom ``audience = "subscribers"`` reaches: subscribers of this kind; None: the channel takes no subscribers
    subscriber_kind: ClassVar[SubscriberKind | None] = None
    #: its provider's calls to ``broadcaster api`` (replies, opt-outs), mounted by the API; None: none
    inbound: ClassVar[builtins.type[InboundWebhook] | None] = None
    #: its provider's emulator for the sandbox, as ``"module:Class"``: imported by the sandbox only
    emulator: ClassVar[str | None] = None

    def __init__(self, name: str, config: C) -> None:
        self.name = name
        self.config = config

    def targets(self) -> list[str]:
        """Where one broadcast sends: one delivery per target."""
        return [self.name]

    def shape(self, parts: dict[str, str], context: dict[str, Any]) -> Message:
        """Turn rendered template parts into the message this channel sends."""
        return Message(parts={key: value.strip() for key, value in parts.items()})

    @abstractmethod
    def send(self, message: Message, target: str, context: SendContext) -> SendResult:
        """Send one message to one target."""

    def check(self) -> str:
        """Verify credentials and reachability without posting; return what was verified."""
        raise NotImplementedError(f"{self.type} channels have no check yet")

    def close(self) -> None:
        """Release connections held between sends."""


# --- inbound webhooks -----------------------------------------------------------------------------------


class Form(Mapping[str, str]):
    """A request's form fields: ``form[name]`` is a field's last value; ``getall`` keeps every value of a
    repeated name, in order (providers sign them all)."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs = list(pairs)
        self._last = dict(self.pairs)

    def __getitem__(self, name: str) -> str:
        return self._last[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._last)

    def __len__(self) -> int:
        return len(self._last)

    def getall(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]


@dataclass(frozen=True)
class InboundRequest:
    """A provider's request to ``broadcaster api``, as the API read it."""

    #: the URL the provider called: ``[subscribers] api_url`` with the path when that is set (the API behind a
    #: proxy), else the URL as the server received it
    url: str
    #: header names in lower case
    headers: Mapping[str, str]
    form: Form


class InboundRefused(Exception):
    """The webhook does not act on a request: the API answers ``status`` (a problem naming ``field``, if any)."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field


class Inbox(Protocol):
    """What an inbound webhook may change: a subscriber's status, once per provider message.

    Each returns the subscriber's new status, or None when nothing changed: ``address`` is no valid address of
    ``kind``, ``message_id`` was acted on before (a replayed request), or (``resubscribe``) no subscriber has
    it. ``unsubscribe`` keeps an unknown address as unsubscribed, so that no later import subscribes it.
    """

    def unsubscribe(self, kind: SubscriberKind, address: str, message_id: str) -> str | None: ...

    def resubscribe(self, kind: SubscriberKind, address: str, message_id: str) -> str | None: ...


class InboundWebhook(ABC):
    """A provider's calls to ``broadcaster api`` at ``path`` (a POSTed form), without a bearer token: the
    webhook authenticates the provider itself, with the credentials of ``configs`` (its type's channels)."""

    path: ClassVar[str]
    #: the API's documentation: a one-line summary, the form fields the provider posts, the answer's media type
    #: and what it is, and what each refusal's status means
    summary: ClassVar[str]
    fields: ClassVar[tuple[str, ...]] = ()
    media_type: ClassVar[str] = "text/plain"
    answer: ClassVar[str] = "Received."
    refusals: ClassVar[dict[int, str]] = {}

    def __init__(self, configs: Sequence[ChannelConfig], inbox: Inbox) -> None:
        self.configs = configs
        self.inbox = inbox

    @abstractmethod
    def receive(self, request: InboundRequest) -> str:
        """Act on one request and return the answer's body, or raise ``InboundRefused``."""


# --- helpers for adapters --------------------------------------------------------------------------------


def retry_after_seconds(value: str | None) -> float | None:
    """Read a ``Retry-After`` header: seconds, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


#: a fragment of a URL shorter than this is not scrubbed on its own (it would mangle ordinary words and numbers)
SCRUB_MIN = 4


def public_url(url: str) -> str:
    """``url`` as it is stored and shown: without ``user:password@``, query and fragment, where credentials hide.

    The full URL is still the one sent to; this one is for targets, errors and ``check`` output.
    """
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def url_secrets(url: str, *, path_too: bool = False) -> list[str]:
    """The pieces of ``url`` that may be credentials: its userinfo, its query, each query value (raw and
    decoded) and, with ``path_too`` (a URL that is itself a secret, like a Slack webhook), its path."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    # With a password the user name is no secret; alone (https://TOKEN@host) it is the credential itself.
    user, _, password = userinfo.partition(":")
    pieces = [userinfo, unquote_plus(userinfo), password or user, unquote_plus(password or user)]
    pieces += [parts.query, parts.fragment]
    for pair in parts.query.split("&"):
        value = pair.partition("=")[2]
        pieces += [value, unquote_plus(value)]
    if path_too:
        pieces.append(parts.path)
    return [p for p in pieces if len(p) >= SCRUB_MIN]


def scrub_url(text: str, url: str, *, secret: bool = False) -> str:
    """Remove ``url``'s credentials from ``text``: the full URL becomes its public form (``***`` when the whole
    URL is a secret), then every credential piece left (e.g. a query quoted alone by urllib3) becomes ``***``."""
    if not url:
        return text
    text = text.replace(url, "***" if secret else public_url(url))
    for piece in sorted(set(url_secrets(url, path_too=secret)), key=len, reverse=True):
        text = text.replace(piece, "***")
    return text
