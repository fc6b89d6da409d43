"""Policy models: backup and replication policies, the vaults bound to them, and the runs
the scheduler claims (cbr-api.md §2.5; scale-out-notes.md §2.4)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from opencbr.db.base import Base, new_uuid, utcnow
from opencbr.db.status import PolicyRunStatus


class PolicyType(StrEnum):
    BACKUP = "backup"
    REPLICATION = "replication"


class Policy(Base):
    """A schedule (CBR trigger patterns) and what to do at each slot, for the bound vaults.

    `start_time` is the schedule's anchor (the creation minute): INTERVAL > 1 counts from
    it, so it is stored once and never recomputed. `next_run_at` is the next slot the
    scheduler will claim (null while disabled); claiming a slot is one conditional UPDATE
    of it, so each slot fires once however many workers tick.
    """

    __tablename__ = "policies"
    __table_args__ = (
        Index("ix_policies_project_created", "project_id", "created_at", "id"),
        Index("ix_policies_next_run", "next_run_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(64))
    operation_type: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(default=True)
    operation_definition: Mapped[dict[str, Any]] = mapped_column(default=dict)
    patterns: Mapped[list[Any]] = mapped_column(default=list)
    start_window_minutes: Mapped[int | None] = mapped_column(default=None)
    start_time: Mapped[datetime] = mapped_column(default=utcnow)
    trigger_id: Mapped[str] = mapped_column(String(36), default=new_uuid)
    next_run_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    bindings: Mapped[list[PolicyBinding]] = relationship(
        back_populates="policy",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="PolicyBinding.created_at",
    )


class PolicyBinding(Base):
    """A vault bound to a policy; a replication policy names the destination vault."""

    __tablename__ = "policy_bindings"

    policy_id: Mapped[str] = mapped_column(
        ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True
    )
    vault_id: Mapped[str] = mapped_column(
        ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    destination_vault_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    policy: Mapped[Policy] = relationship(back_populates="bindings")


class PolicyRun(Base):
    """One slot of one policy (or one "run now"), over every vault bound to it.

    Leased work (services/leases.py): the worker that holds it starts the slot's work vault
    by vault, in batches, and records the last vault done in `cursor`, so a run taken over
    after a crash goes on where it stopped. The unique key is the claim: one run per slot.
    """

    __tablename__ = "policy_runs"
    __table_args__ = (
        UniqueConstraint("policy_id", "slot_at"),
        Index("ix_policy_runs_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    policy_id: Mapped[str] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(32))
    slot_at: Mapped[datetime] = mapped_column()
    manual: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16), default=PolicyRunStatus.WAITING)
    # The last vault id (in id order) whose work this run has started.
    cursor: Mapped[str | None] = mapped_column(String(36))
    started: Mapped[int] = mapped_column(default=0)
    skipped: Mapped[int] = mapped_column(default=0)
    error: Mapped[str] = mapped_column(String(1024), default="")
    attempts: Mapped[int] = mapped_column(default=0)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
