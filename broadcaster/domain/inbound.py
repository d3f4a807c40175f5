"""What a channel's inbound webhook may change (``channels.base.Inbox``): a subscriber's status, once per message.

A webhook (``channels.sms.inbound``: STOP and START replies) authenticates its provider and reads its form;
this module records the provider's message id (``inbound_messages``) in the transaction that changes the
subscriber, so a replayed request changes nothing. Ids older than ``KEEP`` are pruned as new ones arrive, by
their indexed time.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broadcaster.domain.subscribers import confirm_row, find_row, mark_unsubscribed, normalise
from broadcaster.settings import Settings
from broadcaster.store.db import session_scope
from broadcaster.store.models import InboundMessage, Kind, Subscriber, SubscriberStatus, new_id, utcnow
from channels.base import SubscriberKind

log = logging.getLogger(__name__)

#: how long a message id is remembered; providers retry a webhook within minutes, not weeks
KEEP = timedelta(days=30)


class SubscriberInbox:
    """The ``Inbox`` the API hands each inbound webhook: subscribers in ``settings``' log."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def unsubscribe(self, kind: SubscriberKind, address: str, message_id: str) -> str | None:
        return self._change(Kind(kind), address, message_id, unsubscribe=True)

    def resubscribe(self, kind: SubscriberKind, address: str, message_id: str) -> str | None:
        return self._change(Kind(kind), address, message_id, unsubscribe=False)

    def _change(self, kind: Kind, address: str, message_id: str, unsubscribe: bool) -> str | None:
        try:
            address = normalise(kind, address)
        except ValueError:
            return None
        now = utcnow()
        with session_scope(self.settings.database_url) as session:
            if not _first_time(session, message_id, now):
                log.info("inbound message %s was handled before; nothing changes", message_id)
                return None
            row = find_row(session, kind, address)
            if unsubscribe:
                row = row or _unsubscribed(session, kind, address, now)
                mark_unsubscribed(row, now)
            elif row is not None:
                confirm_row(row, now)
            else:
                return None
            session.flush()
            log.info("%s %s %s: %s", "unsubscribe" if unsubscribe else "resubscribe", kind, address, row.status)
            return row.status


def _first_time(session: Session, message_id: str, now: datetime) -> bool:
    """Record ``message_id``; False when it was acted on already (or by a concurrent copy of this request)."""
    try:
        with session.begin_nested():
            session.add(InboundMessage(message_sid=message_id, received_at=now))
    except IntegrityError:
        return False
    session.execute(delete(InboundMessage).where(InboundMessage.received_at < now - KEEP))
    return True


def _unsubscribed(session: Session, kind: Kind, address: str, now: datetime) -> Subscriber:
    """A new subscriber who is unsubscribed from the start (unless someone added it meanwhile)."""
    row = Subscriber(
        id=new_id(),
        kind=kind,
        address=address,
        components=[],
        status=SubscriberStatus.unsubscribed,
        failures=0,
        created_at=now,
        updated_at=now,
        unsubscribed_at=now,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        found = find_row(session, kind, address)
        assert found is not None
        return found
    return row
