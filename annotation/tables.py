"""The store's tables. Times are UTC; SQLite keeps them naive, so one column type makes them aware again."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None else None


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[object, object]] = {datetime: UTCDateTime, dict[str, Any]: JSON, list[int]: JSON}


class Annotator(Base):
    __tablename__ = "annotators"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # pair | ranking
    prompt: Mapped[Any] = mapped_column(JSON)  # a string or chat messages, as uploaded
    annotators_required: Mapped[int] = mapped_column(Integer)
    # Slots not yet taken by an active or submitted assignment; taken with a conditional UPDATE, which is what keeps
    # concurrent annotators from over-assigning a task on PostgreSQL and SQLite alike.
    open_slots: Mapped[int] = mapped_column(Integer)
    submitted: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    external_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    meta: Mapped[dict[str, Any] | None]
    created_by: Mapped[int | None] = mapped_column(ForeignKey("annotators.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    responses: Mapped[list[Response]] = relationship(
        order_by="Response.position", cascade="all, delete-orphan", lazy="selectin"
    )

    __table_args__ = (Index("ix_tasks_queue", "open_slots", "priority", "id"),)


class Response(Base):
    __tablename__ = "responses"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    policy: Mapped[str | None] = mapped_column(String(200))
    policy_version: Mapped[str | None] = mapped_column(String(200), index=True)
    sampling: Mapped[dict[str, Any] | None]
    meta: Mapped[dict[str, Any] | None]

    __table_args__ = (UniqueConstraint("task_id", "position"),)


class Assignment(Base):
    __tablename__ = "assignments"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"))
    state: Mapped[str] = mapped_column(String(10))  # active | submitted | skipped | expired
    order: Mapped[list[int]]  # display position -> upload position
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]

    # One assignment per annotator and task, ever: nobody is shown a task twice.
    __table_args__ = (
        UniqueConstraint("task_id", "annotator_id"),
        Index("ix_assignments_state_expiry", "state", "expires_at"),
        Index("ix_assignments_annotator_state", "annotator_id", "state"),
    )


class Annotation(Base):
    __tablename__ = "annotations"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"))
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"))
    ranking: Mapped[list[int]]  # rank per upload position, 1 the best
    strength: Mapped[str | None] = mapped_column(String(30))
    rationale: Mapped[str | None] = mapped_column(Text)
    safety_flag: Mapped[bool] = mapped_column(Boolean, default=False)
    time_spent_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("task_id", "annotator_id"),)


class IdempotencyRecord(Base):
    """The stored answer to a call made with an Idempotency-Key, replayed when the call is retried."""

    __tablename__ = "idempotency_keys"
    key: Mapped[str] = mapped_column(String(250), primary_key=True)  # "<lead id>:<their key>"
    scope: Mapped[str] = mapped_column(String(50))
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("annotators.id"))
    action: Mapped[str] = mapped_column(String(50))
    target: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict[str, Any] | None]
