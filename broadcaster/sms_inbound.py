"""Twilio's inbound messages (``POST /webhooks/twilio``): the signature, each MessageSid once, STOP and START.

The signature (``X-Twilio-Signature``) covers the URL Twilio called. When ``[subscribers] api_url`` is set it
is checked against that form of the URL only, so a request signed for another host (one that Twilio posts to
for the same account, say) is refused whatever ``Host`` it claims; only without ``api_url`` does the URL as
this server sees it count.

A keyword message is acted on once: its MessageSid is recorded (``inbound_messages``) in the transaction that
changes the subscriber, so a replayed signed request (a START after the number's STOP) changes nothing. Ids
older than ``KEEP`` are pruned as new ones arrive, by their indexed time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from broadcaster.db import session_scope
from broadcaster.models import InboundMessage, new_id, utcnow
from broadcaster.settings import Settings
from broadcaster.subscribers import (
    Kind,
    Subscriber,
    SubscriberStatus,
    _confirm,
    _find,
    _unsubscribe,
    normalise_phone,
)

log = logging.getLogger(__name__)

#: Twilio's standard opt-out and opt-in keywords (the whole message, any case)
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
#: how long a MessageSid is remembered; Twilio retries a webhook within minutes, not weeks
KEEP = timedelta(days=30)
#: a Twilio message SID: SM (or MM for MMS) and 32 hexadecimal digits
MESSAGE_SID = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}$")


def signed_by_twilio(
    settings: Settings, seen_url: str, path: str, query: str, params: Mapping[str, Any], signature: str
) -> bool:
    """Whether ``signature`` is Twilio's for the URL it called, under the auth token of an sms channel of the
    posting account (``params["AccountSid"]``); ``seen_url`` is the URL as this server received it."""
    from twilio.request_validator import RequestValidator

    account = params.get("AccountSid")
    tokens = {
        config.auth_token.get_secret_value()  # type: ignore[attr-defined]
        for config in settings.channels.values()
        if config.type == "sms" and getattr(config, "account_sid", None) == account
    }
    api_url = settings.subscribers.api_url
    url = f"{api_url}{path}{'?' + query if query else ''}" if api_url else seen_url
    return any(RequestValidator(token).validate(url, params, signature) for token in tokens)


def keyword(body: str) -> str | None:
    """The STOP or START word that the whole message is (any case), else None."""
    word = body.strip().upper()
    return word if word in STOP_WORDS or word in START_WORDS else None


def receive(settings: Settings, message_sid: str, phone: str, body: str) -> str | None:
    """Act on one inbound SMS: STOP words unsubscribe ``phone``, START words confirm it again, each once.

    Returns the subscriber's new status; None when the message is no keyword, the number no subscriber, or
    ``message_sid`` was acted on already (a replay). A STOP from an unknown number is remembered
    (unsubscribed), so that no later import subscribes it.
    """
    word = keyword(body)
    if word is None:
        return None
    try:
        phone = normalise_phone(phone)
    except ValueError:
        return None
    now = utcnow()
    with session_scope(settings.database_url) as session:
        try:
            with session.begin_nested():
                session.add(InboundMessage(message_sid=message_sid, received_at=now))
        except IntegrityError:  # acted on already (or by a concurrent copy of this request)
            log.info("SMS %s: message %s was handled before; nothing changes", word, message_sid)
            return None
        session.execute(delete(InboundMessage).where(InboundMessage.received_at < now - KEEP))
        row = _find(session, Kind.phone, phone)
        if word in STOP_WORDS:
            if row is None:
                row = Subscriber(
                    id=new_id(),
                    kind=Kind.phone,
                    address=phone,
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
                    row = _find(session, Kind.phone, phone)
                    assert row is not None
            _unsubscribe(row, now)
        elif row is not None:
            _confirm(row, now)  # it just texted us: the number works
        else:
            return None
        session.flush()
        log.info("SMS %s from %s: %s", word, phone, row.status)
        return row.status
