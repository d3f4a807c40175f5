"""Every table, in one place: the delivery log (Incident, Update, Broadcast, Delivery, Attempt), inbound
messages (replays refused), subscribers and signing keys, the lifecycle's reminders, maintenance windows and
post-mortems, and idempotency keys. The schema's history is in ``migrations/``."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from ulid import ULID

#: the longest Idempotency-Key a client may send
IDEMPOTENCY_KEY_LENGTH = 255


def new_id() -> str:
    return str(ULID())


def utcnow() -> datetime:
    return datetime.now(UTC)


class IncidentStatus(StrEnum):
    investigating = "investigating"
    identified = "identified"
    monitoring = "monitoring"
    resolved = "resolved"


class Impact(StrEnum):
    none = "none"
    minor = "minor"
    major = "major"
    critical = "critical"


class DeliveryStatus(StrEnum):
    pending = "pending"
    sending = "sending"
    retrying = "retrying"
    delivered = "delivered"
    failed = "failed"

    @property
    def finished(self) -> bool:
        return self in (DeliveryStatus.delivered, DeliveryStatus.failed)


class Outcome(StrEnum):
    delivered = "delivered"
    transient = "transient"
    rate_limited = "rate_limited"
    permanent = "permanent"


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored and read back as aware UTC datetimes, SQLite included."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    impact: Mapped[str] = mapped_column(String(20), default=Impact.minor)
    components: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    updates: Mapped[list[Update]] = relationship(back_populates="incident", order_by="Update.created_at")


class Update(Base):
    __tablename__ = "updates"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    status: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: when the responders promise the next update
    next_update_by: Mapped[datetime | None] = mapped_column(UTCDateTime)

    incident: Mapped[Incident] = relationship(back_populates="updates")


class Broadcast(Base):
    __tablename__ = "broadcasts"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    #: the update broadcast; none for events about the incident (a reminder, a maintenance step)
    update_id: Mapped[str | None] = mapped_column(ForeignKey("updates.id"), index=True)
    event: Mapped[str] = mapped_column(String(40), default="incident.update")
    #: how it was rendered: the template folder and any context beyond the incident (so fallbacks render alike)
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    channels: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: channel name -> rendered Message (parts, data, size, warnings): rendered once, sent to every target
    renderings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    deliveries: Mapped[list[Delivery]] = relationship(back_populates="broadcast", order_by="Delivery.id")


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("broadcast_id", "channel", "target", name="uq_delivery_target"),
        Index("ix_deliveries_status_due", "status", "due_at"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    broadcast_id: Mapped[str] = mapped_column(ForeignKey("broadcasts.id"), index=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    channel: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: attempts made before the last manual retry; the retry budget counts from here
    budget_from: Mapped[int] = mapped_column(Integer, default=0)
    provider_id: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    fallback_for: Mapped[str | None] = mapped_column(ForeignKey("deliveries.id"), index=True)
    #: this delivery's own rendering, when it is not the broadcast's for its channel (fallbacks)
    message: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: when a `retrying` delivery is due; when a `sending` claim's lease runs out
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: what an adapter keeps between attempts (e.g. the parts of a thread already posted)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    broadcast: Mapped[Broadcast] = relationship(back_populates="deliveries")
    attempt_log: Mapped[list[Attempt]] = relationship(back_populates="delivery", order_by="Attempt.number")


class Attempt(Base):
    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "number", name="uq_attempt_number"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("deliveries.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    provider_id: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_seconds: Mapped[float] = mapped_column(Float)

    delivery: Mapped[Delivery] = relationship(back_populates="attempt_log")


class InboundMessage(Base):
    """An inbound message that a channel's webhook acted on, by its provider's id (an SMS's MessageSid): a replay
    is ignored.

    Rows older than ``broadcaster.domain.inbound.KEEP`` are pruned as new ones arrive (by the indexed time).
    """

    __tablename__ = "inbound_messages"
    __table_args__ = (Index("ix_inbound_messages_received_at", "received_at"),)

    message_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Kind(StrEnum):
    email = "email"
    phone = "phone"


class SubscriberStatus(StrEnum):
    confirmed = "confirmed"
    unsubscribed = "unsubscribed"
    quarantined = "quarantined"


class Subscriber(Base):
    """One address and what it follows; ``failures`` counts permanent failures in a row."""

    __tablename__ = "subscribers"
    __table_args__ = (
        UniqueConstraint("kind", "address", name="uq_subscriber_address"),
        Index("ix_subscribers_kind_status", "kind", "status"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(8))
    #: an email address (lower-cased) or an E.164 number: the delivery target
    address: Mapped[str] = mapped_column(String(320))
    #: component names; empty: every component
    components: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default=SubscriberStatus.confirmed)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    quarantined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SigningKey(Base):
    """Keys generated for this deployment when the configuration names none."""

    __tablename__ = "signing_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Reminder(Base):
    """A reminder (to responders) or a holding statement (to customers) about one period of silence."""

    __tablename__ = "reminders"
    __table_args__ = (UniqueConstraint("update_id", "level", "kind", name="uq_reminder_once"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    #: the incident's latest update when the reminder was due: the silence began with it
    update_id: Mapped[str] = mapped_column(ForeignKey("updates.id"))
    #: 1 after one period of silence, 2 after two (escalated), ...
    level: Mapped[int] = mapped_column(Integer)
    #: ``reminder`` or ``holding``
    kind: Mapped[str] = mapped_column(String(16))
    broadcast_id: Mapped[str | None] = mapped_column(ForeignKey("broadcasts.id"))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Maintenance(Base):
    """A scheduled maintenance window; its broadcasts belong to its own incident (impact ``none``)."""

    __tablename__ = "maintenance"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), unique=True)
    title: Mapped[str] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)
    components: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: where every step is posted, chosen when it was scheduled
    channels: Mapped[list[str]] = mapped_column(JSON, default=list)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: when subscribers are reminded; none when there is no reminder
    remind_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: the last step taken (see broadcaster.maintenance.STEPS); only ever moves forward
    step: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    announced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Postmortem(Base):
    """A published post-mortem report of a resolved incident."""

    __tablename__ = "postmortems"
    __table_args__ = (UniqueConstraint("incident_id", "digest", name="uq_postmortem_report"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), index=True)
    #: SHA-256 of the report: the same report is published once
    digest: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    title: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    markdown: Mapped[str] = mapped_column(Text)
    broadcast_id: Mapped[str | None] = mapped_column(ForeignKey("broadcasts.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyKey(Base):
    """One key's claim and, once the action finished, its answer."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(IDEMPOTENCY_KEY_LENGTH), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    #: the claimant's id: only it may complete or release the claim
    claim: Mapped[str] = mapped_column(String(26))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
