"""The delivery log: Incident, Update, Broadcast, Delivery, Attempt; and InboundMessage (Twilio replays)."""

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
    """An inbound SMS that Twilio's webhook delivered and we acted on, by its MessageSid: a replay is ignored.

    Rows older than ``broadcaster.sms_inbound.KEEP`` are pruned as new ones arrive (by the indexed time).
    """

    __tablename__ = "inbound_messages"
    __table_args__ = (Index("ix_inbound_messages_received_at", "received_at"),)

    message_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
