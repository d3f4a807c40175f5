"""Audiences (every confirmed subscriber of a channel's kind who follows the incident's components) and
quarantine (a run of permanent failures, or the provider's own opt-out)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from email.utils import parseaddr
from typing import Any

from sqlalchemy import (
    bindparam,
    case,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session

from broadcaster.core.errors import DeliveryError, InputError, PermanentError
from broadcaster.domain.links import sign, signing_key, unsubscribe_url
from broadcaster.domain.subscribers import SUBSCRIBERS, follows, kind_of_channel
from broadcaster.settings import Settings
from broadcaster.store.models import Kind, Subscriber, SubscriberStatus, UTCDateTime, utcnow
from channels.base import UNSUBSCRIBE_STATE
from channels.registry import subscriber_kinds

log = logging.getLogger(__name__)


def audience_of(settings: Settings, channel: str) -> Kind | None:
    """The kind of subscriber ``channel`` also sends to, or None when it has no audience."""
    config = settings.channels[channel]
    audience = getattr(config, "audience", None)
    if audience is None:
        return None
    key = f"channels.{channel}.audience"
    if audience != SUBSCRIBERS:
        raise InputError(f'{key}: must be "{SUBSCRIBERS}", not {audience!r}', field=key)
    kind = kind_of_channel(config.type)
    if kind is None:
        takers = " and ".join(sorted(subscriber_kinds()))
        raise InputError(f"{key}: {config.type} channels have no subscribers ({takers} do)", field=key)
    return kind


def audience_targets(
    session: Session, settings: Settings, channel: str, configured: Sequence[str], components: Sequence[str]
) -> list[tuple[str, dict[str, Any]]]:
    """Each target of ``channel`` with its delivery's first state: its recipients, then its audience.

    An email subscriber's state carries its signed unsubscribe link (``UNSUBSCRIBE_STATE``). A subscriber who
    is also a configured recipient gets one delivery, as a recipient.
    """
    targets: dict[str, dict[str, Any]] = {target: {} for target in configured}
    kind = audience_of(settings, channel)
    if kind is None:
        return list(targets.items())
    known = {_bare(kind, target) for target in configured}
    key = signing_key(settings, session) if kind == Kind.email else None
    query = (
        select(Subscriber.id, Subscriber.address, Subscriber.components)
        .where(Subscriber.kind == kind, Subscriber.status == SubscriberStatus.confirmed)
        .order_by(Subscriber.id)
    )
    for subscriber_id, address, followed in session.execute(query):
        if address in known or not follows(followed or [], components):
            continue
        state = {UNSUBSCRIBE_STATE: unsubscribe_url(settings, sign(key, subscriber_id))} if key else {}
        targets[address] = state
    return list(targets.items())


def _bare(kind: Kind, target: str) -> str:
    return parseaddr(target)[1].lower() if kind == Kind.email else target


# --- quarantine --------------------------------------------------------------------------------------------


def recipient_verdict(error: DeliveryError) -> str | None:
    """``bounced`` when a permanent failure is the address's fault, ``unsubscribed`` when the provider says
    the recipient opted out; None for every other failure (credentials, content, the provider's state).

    The adapter says which, in ``PermanentError.recipient`` (a mailbox refused at RCPT, a number the provider
    calls invalid; an opt-out the provider keeps).
    """
    if not isinstance(error, PermanentError) or error.recipient is None:
        return None
    return "unsubscribed" if error.recipient == "unsubscribed" else "bounced"


def _kept_by_audience(settings: Settings, channel: str) -> Kind | None:
    """The kind of subscriber a channel with an audience sends to; None for any other channel."""
    config = settings.channels.get(channel)
    if config is None or getattr(config, "audience", None) is None:
        return None
    return kind_of_channel(config.type)


#: built once: a large fan-out runs it for every batch
_RESET_FAILURES = (
    update(Subscriber)
    .where(
        Subscriber.kind == bindparam("subscriber_kind"),
        Subscriber.address.in_(bindparam("subscriber_addresses", expanding=True)),
        Subscriber.failures > 0,
    )
    .values(failures=0, updated_at=bindparam("reset_at"))
)


def note_successes(session: Session, settings: Settings, channel: str, targets: Sequence[str]) -> None:
    """A success ends a subscriber's run of permanent failures (one statement for a batch of targets)."""
    kind = _kept_by_audience(settings, channel)
    if kind is None or not targets:
        return
    addresses = sorted({_bare(kind, target) for target in targets})
    session.connection().execute(
        _RESET_FAILURES, {"subscriber_kind": kind.value, "subscriber_addresses": addresses, "reset_at": utcnow()}
    )


def note_outcome(
    session: Session, settings: Settings, channel: str, target: str, error: DeliveryError | None, reason: str | None
) -> None:
    """Keep a subscriber's run of permanent failures: reset by a success, quarantining at the limit.

    ``reason`` is the error as the delivery log shows it (its secrets redacted); it becomes ``last_error``.
    Only for channels with an audience; a target that is no subscriber is left alone. Runs in the
    transaction that records the attempt.
    """
    kind = _kept_by_audience(settings, channel)
    if kind is None:
        return
    if error is None:
        note_successes(session, settings, channel, [target])
        return
    now = utcnow()
    this = (Subscriber.kind == kind.value) & (Subscriber.address == _bare(kind, target))
    verdict = recipient_verdict(error)
    if verdict is None:
        return
    reason = (reason or str(error))[:1000]
    if verdict == "unsubscribed":
        statement = (
            update(Subscriber)
            .where(this, Subscriber.status != SubscriberStatus.unsubscribed)
            .values(status=SubscriberStatus.unsubscribed, unsubscribed_at=now, last_error=reason, updated_at=now)
        )
    else:
        reached = (Subscriber.failures + 1 >= settings.subscribers.quarantine_after) & (
            Subscriber.status == SubscriberStatus.confirmed
        )
        statement = (
            update(Subscriber)
            .where(this)
            .values(
                failures=Subscriber.failures + 1,
                last_error=reason,
                updated_at=now,
                status=case((reached, literal(SubscriberStatus.quarantined.value)), else_=Subscriber.status),
                quarantined_at=case((reached, literal(now, UTCDateTime())), else_=Subscriber.quarantined_at),
            )
        )
    session.execute(statement.execution_options(synchronize_session=False))
