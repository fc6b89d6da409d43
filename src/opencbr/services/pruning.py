"""Retention applied: which backups policies and expiry dates remove, through the normal
delete path (operation log `delete`, manifests, rows, then garbage collection).

The decision is the pure `services.retention.decide`; this module chooses its input and
carries out its verdict. A policy prunes only what it made (`backups.policy_id`): its
automatic backups in the vaults bound to it (a backup policy) or its replicas in the
destination vaults of its bindings (a replication policy), per (vault, resource).
Manual backups are never touched by a policy; they go when their own `expired_at`
passes. Nothing that is being restored or replicated is deleted (the delete path's own
refusal), and the newest backup of a group is always kept.

Pruning one policy is one transaction with the policy row locked, so two workers never
decide over the same backups at once; marking a backup `deleting` is conditional on its
status (rows selected FOR UPDATE, and re-checked after the wait), so a decision taken twice
deletes nothing twice.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session, aliased

from opencbr import clock
from opencbr.db.backups import Backup, ReplicationRecord
from opencbr.db.policies import Policy, PolicyType
from opencbr.db.status import KEPT_BACKUP, BackupStatus
from opencbr.services import backups, retention, schedule
from opencbr.services.runtime import Runtime

log = structlog.get_logger(__name__)

EXPIRED_PER_SWEEP = 500


def rules_of(definition: dict[str, Any]) -> retention.Rules:
    """The retention rules of a policy's `operation_definition` (validated on the way in)."""

    def number(key: str, default: int) -> int:
        value = definition.get(key)
        return default if value is None else int(value)

    zone = definition.get("timezone")
    return retention.Rules(
        max_backups=number("max_backups", -1),
        retention_duration_days=number("retention_duration_days", -1),
        day_backups=number("day_backups", 0),
        week_backups=number("week_backups", 0),
        month_backups=number("month_backups", 0),
        year_backups=number("year_backups", 0),
        timezone=schedule.parse_timezone(zone) if zone else UTC,
    )


def prune(rt: Runtime, policy_id: str) -> list[str]:
    """Apply the policy's retention now; the ids of the backups it marked `deleting` (the
    caller enqueues their delete tasks)."""
    now = clock.now()
    with rt.db.transaction() as session:
        policy = session.get(Policy, policy_id, with_for_update=True)
        if policy is None:
            return []
        rules = rules_of(policy.operation_definition)
        if retention.keeps_everything(rules):
            return []
        groups = _groups(session, policy)
        deleted = []
        for members in groups.values():
            _show_expiry(members, rules)
            deleted += _carry_out(session, policy, members, rules, now)
    if deleted:
        log.info("retention pruned backups", policy_id=policy_id, backups=len(deleted))
    return deleted


def _groups(session: Session, policy: Policy) -> dict[tuple[str, str], list[Backup]]:
    """The policy's kept backups per (vault, resource), in the vaults it prunes."""
    if policy.operation_type == PolicyType.BACKUP:
        vault_ids = [binding.vault_id for binding in policy.bindings]
    else:
        vault_ids = [b.destination_vault_id for b in policy.bindings if b.destination_vault_id]
    rows = session.scalars(
        select(Backup)
        .where(
            Backup.policy_id == policy.id,
            Backup.vault_id.in_(vault_ids),
            Backup.parent_id.is_(None),
            Backup.status.in_(KEPT_BACKUP),
        )
        .with_for_update()  # an expiry or a DELETE marking one `deleting` meanwhile wins
    )
    groups: dict[tuple[str, str], list[Backup]] = defaultdict(list)
    for backup in rows:
        groups[(backup.vault_id, backup.resource_id)].append(backup)
    return groups


def _show_expiry(members: list[Backup], rules: retention.Rules) -> None:
    """Backups show when the rolling age bound removes them (a replica learns it here)."""
    for backup in members:
        if backup.expired_at is None:
            backup.expired_at = retention.expires_at(backup.created_at, rules)


def _carry_out(
    session: Session,
    policy: Policy,
    members: list[Backup],
    rules: retention.Rules,
    now: datetime,
) -> list[str]:
    candidates = [retention.Candidate(b.id, b.created_at) for b in members]
    verdict = retention.decide(candidates, rules, now)
    deleted = []
    for backup in members:
        reason = verdict.delete.get(backup.id)
        if reason is None or backups.deletion_refused(session, backup) is not None:
            continue
        backups.begin_delete(session, backup, policy_id=policy.id, reason=reason)
        deleted.append(backup.id)
    return deleted


def expire(rt: Runtime) -> list[str]:
    """Mark `deleting` the backups whose `expired_at` has passed (a manual checkpoint's
    `retention_duration_days`, a vault's new expiration time, a policy's age bound), except
    the newest of a policy's group; their ids."""
    now = clock.now()
    newer = aliased(Backup)
    has_newer_sibling = exists().where(
        newer.policy_id == Backup.policy_id,
        newer.vault_id == Backup.vault_id,
        newer.resource_id == Backup.resource_id,
        newer.parent_id.is_(None),
        newer.status.in_(KEPT_BACKUP),
        newer.created_at > Backup.created_at,
    )
    with rt.db.transaction() as session:
        expired = session.scalars(
            select(Backup)
            .where(
                Backup.expired_at < now,
                Backup.parent_id.is_(None),
                Backup.status == BackupStatus.AVAILABLE,
                Backup.policy_id.is_(None) | and_(Backup.policy_id.is_not(None), has_newer_sibling),
            )
            .order_by(Backup.expired_at)
            .limit(EXPIRED_PER_SWEEP)
            # Two workers' sweeps never mark one backup twice: the second waits for the
            # row, and PostgreSQL then re-checks the status it was selected by.
            .with_for_update()
        ).all()
        deleted = []
        for backup in expired:
            if backups.deletion_refused(session, backup) is None:
                backups.begin_delete(session, backup, reason="expired")
                deleted.append(backup.id)
    if deleted:
        log.info("expired backups deleted", backups=len(deleted))
    return deleted


def policies_to_sweep(rt: Runtime) -> list[str]:
    """Every policy with a retention rule and a bound vault (the periodic sweep)."""
    with rt.db.reading() as session:
        return [
            policy.id
            for policy in session.scalars(select(Policy).where(Policy.bindings.any()))
            if not retention.keeps_everything(rules_of(policy.operation_definition))
        ]


def policy_of_checkpoint(rt: Runtime, checkpoint_id: str) -> str | None:
    """The policy whose run made the checkpoint's backups (None for a manual one)."""
    with rt.db.reading() as session:
        return session.scalar(
            select(Backup.policy_id)
            .where(Backup.checkpoint_id == checkpoint_id, Backup.parent_id.is_(None))
            .limit(1)
        )


def policy_of_record(rt: Runtime, record_id: str) -> str | None:
    with rt.db.reading() as session:
        return session.scalar(
            select(ReplicationRecord.policy_id).where(ReplicationRecord.id == record_id)
        )
