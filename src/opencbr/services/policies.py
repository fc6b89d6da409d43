"""Policies: create, list, show, update and delete backup and replication policies, and bind
them to vaults (cbr-api.md §2.1.9-2.1.10, §2.5; policies.md §3.1-3.4).

A policy is its schedule (CBR trigger patterns, checked by `schedule`) and what each slot
does to the vaults bound to it; the scheduler (`policy_runs`) claims `next_run_at`, which
`reschedule` keeps at the policy's next slot (null while it is disabled).

Bindings: a vault has at most one backup policy and one replication policy. A backup policy
binds to a backup vault; a replication policy binds to a backup vault with a destination
vault, checked exactly as a replicate call checks its destination
(`replication.check_destination`). Deleting a policy unbinds it from its vaults; deleting a
vault unbinds it, and also drops the bindings that replicate into it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.db.identity import Project
from opencbr.db.paging import Page, PageRequest, fetch_page
from opencbr.db.policies import Policy, PolicyBinding, PolicyType
from opencbr.db.session import Database
from opencbr.db.vaults import Vault
from opencbr.errors import (
    INVALID_PARAMETER,
    POLICY_DESTINATION_FIXED,
    POLICY_NOT_APPLICABLE,
    POLICY_NOT_FOUND,
    POLICY_QUOTA_REACHED,
    REGION_CANNOT_REPLICATE,
    UNKNOWN_POLICY_TYPE,
    VAULT_NOT_BOUND_TO_POLICY,
    VAULT_NOT_FOUND,
    CbrError,
)
from opencbr.services import replication, schedule, vaults
from opencbr.services.identity import AuthContext
from opencbr.services.replication import Destination
from opencbr.settings import Settings

# CBR's quota: policies of one type in one project.
MAX_POLICIES_PER_TYPE = 32
# Retention counts that keep one backup per calendar bucket of the policy's timezone.
CALENDAR_COUNTS = ("day_backups", "week_backups", "month_backups", "year_backups")
DESTINATION_FIELDS = ("destination_region", "destination_project_id")


@dataclass(frozen=True)
class PolicySpec:
    name: str
    operation_type: str
    # The fields the request set (PolicyoODCreate's names), without nulls.
    operation_definition: dict[str, Any]
    patterns: tuple[str, ...]
    start_window_minutes: int | None = None
    enabled: bool = True


@dataclass(frozen=True)
class TriggerChange:
    patterns: tuple[str, ...]
    start_window_minutes: int | None = None
    # False when the request did not name start_window_minutes: it keeps its value (an
    # explicit null clears it).
    sets_window: bool = False


@dataclass(frozen=True)
class PolicyChanges:
    name: str | None = None
    enabled: bool | None = None
    # Sent only to be refused when it differs: a policy's type never changes.
    operation_type: str | None = None
    # The operation_definition fields the request named; a null value removes the field.
    operation_definition: dict[str, Any] | None = None
    trigger: TriggerChange | None = None


@dataclass(frozen=True)
class PolicyFilter:
    operation_type: str | None = None
    vault_id: str | None = None


def reschedule(policy: Policy, now: datetime) -> None:
    """Point `next_run_at` at the policy's first slot after `now`; null while disabled.

    Called when a policy is created, enabled, or given new patterns (and by the scheduler).
    Not on other changes: a slot that is due but not yet claimed must not be skipped by a
    rename.
    """
    if not policy.enabled:
        policy.next_run_at = None
        return
    plan = schedule.Schedule(tuple(policy.patterns), policy.start_time)
    policy.next_run_at = plan.next_after(now)


# --- policies ---------------------------------------------------------------------------


def create(db: Database, settings: Settings, ctx: AuthContext, spec: PolicySpec) -> Policy:
    _check_type(spec.operation_type)
    definition = _checked_definition(settings, ctx, spec.operation_type, spec.operation_definition)
    _check_patterns(spec.patterns)
    now = clock.now()
    with db.transaction() as session:
        # The project row serialises creations, so concurrent ones cannot pass the quota.
        session.execute(select(Project.id).where(Project.id == ctx.project_id).with_for_update())
        existing = session.scalar(
            select(func.count())
            .select_from(Policy)
            .where(
                Policy.project_id == ctx.project_id, Policy.operation_type == spec.operation_type
            )
        )
        if (existing or 0) >= MAX_POLICIES_PER_TYPE:
            raise CbrError(
                POLICY_QUOTA_REACHED,
                f"A project may have {MAX_POLICIES_PER_TYPE} {spec.operation_type} policies.",
            )
        policy = Policy(
            project_id=ctx.project_id,
            name=spec.name,
            operation_type=spec.operation_type,
            enabled=spec.enabled,
            operation_definition=definition,
            patterns=list(spec.patterns),
            start_window_minutes=spec.start_window_minutes,
            start_time=schedule.anchor(now),
            created_at=now,
            updated_at=now,
            bindings=[],
        )
        reschedule(policy, now)
        session.add(policy)
        session.flush()
        return policy


def get_in_session(
    session: Session, ctx: AuthContext, policy_id: str, *, for_update: bool = False
) -> Policy:
    policy = session.get(Policy, policy_id, with_for_update=for_update)
    if policy is None or policy.project_id != ctx.project_id:
        raise CbrError(POLICY_NOT_FOUND, f"The policy {policy_id} does not exist.")
    return policy


def get(db: Database, ctx: AuthContext, policy_id: str) -> Policy:
    with db.reading() as session:
        return get_in_session(session, ctx, policy_id)


def list_page(
    db: Database, ctx: AuthContext, filters: PolicyFilter, page: PageRequest
) -> Page[Policy]:
    """The project's policies, newest first; `vault_id` keeps those bound to that vault."""
    if filters.operation_type is not None:
        _check_type(filters.operation_type)
    in_project = Policy.project_id == ctx.project_id
    query = select(Policy).where(in_project)
    if filters.operation_type is not None:
        query = query.where(Policy.operation_type == filters.operation_type)
    if filters.vault_id is not None:
        bound = select(PolicyBinding.policy_id).where(PolicyBinding.vault_id == filters.vault_id)
        query = query.where(Policy.id.in_(bound))
    with db.reading() as session:
        return fetch_page(session, query, Policy.created_at, Policy.id, page, in_project)


def update(
    db: Database, settings: Settings, ctx: AuthContext, policy_id: str, changes: PolicyChanges
) -> Policy:
    if changes.trigger is not None:
        _check_patterns(changes.trigger.patterns)
    now = clock.now()
    with db.transaction() as session:
        policy = get_in_session(session, ctx, policy_id, for_update=True)
        if changes.operation_type not in (None, policy.operation_type):
            raise CbrError(INVALID_PARAMETER, "operation_type of a policy cannot be changed.")
        if changes.operation_definition is not None:
            policy.operation_definition = _changed_definition(
                settings, ctx, policy, changes.operation_definition
            )
        if changes.name is not None:
            policy.name = changes.name
        due = _apply_schedule_changes(policy, changes)
        if due:
            reschedule(policy, now)
        policy.updated_at = now
        return policy


def _apply_schedule_changes(policy: Policy, changes: PolicyChanges) -> bool:
    """Apply the changes of `enabled` and the trigger; whether the next slot may move."""
    moved = False
    if changes.enabled is not None and changes.enabled != policy.enabled:
        policy.enabled = changes.enabled
        moved = True
    trigger = changes.trigger
    if trigger is not None:
        if list(trigger.patterns) != list(policy.patterns):
            policy.patterns = list(trigger.patterns)
            moved = True
        if trigger.sets_window:
            policy.start_window_minutes = trigger.start_window_minutes
    return moved


def _changed_definition(
    settings: Settings, ctx: AuthContext, policy: Policy, changes: dict[str, Any]
) -> dict[str, Any]:
    """The stored definition with `changes` merged in (a null removes a field), checked as
    a whole; a bound replication policy keeps its destination, whatever the new one."""
    stored = policy.operation_definition
    merged = {**stored}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    moved = [key for key in DESTINATION_FIELDS if merged.get(key) != stored.get(key)]
    if moved and policy.bindings:
        raise CbrError(
            POLICY_DESTINATION_FIXED,
            f"The policy is bound to vaults: its {' and '.join(moved)} cannot change;"
            " dissociate it from its vaults first.",
        )
    return _checked_definition(settings, ctx, policy.operation_type, merged)


def delete(db: Database, ctx: AuthContext, policy_id: str) -> None:
    """Delete the policy; it is unbound from its vaults (the bindings go with it). Backups
    its runs made stay, as automatic backups no policy prunes any more."""
    with db.transaction() as session:
        policy = get_in_session(session, ctx, policy_id, for_update=True)
        session.delete(policy)


def _check_type(operation_type: str) -> None:
    if operation_type not in tuple(PolicyType):
        raise CbrError(
            UNKNOWN_POLICY_TYPE,
            f"Unknown policy type {operation_type[:32]!r}: it is backup or replication.",
        )


def _check_patterns(patterns: Sequence[str]) -> None:
    try:
        schedule.validate(patterns)
    except schedule.PatternError as exc:
        raise CbrError(INVALID_PARAMETER, f"trigger.properties.pattern: {exc}") from None


def _checked_definition(
    settings: Settings, ctx: AuthContext, operation_type: str, definition: dict[str, Any]
) -> dict[str, Any]:
    """The operation definition to store, once its fields agree with each other and with
    the policy's type (ranges are the wire models' to check)."""
    checked = {key: value for key, value in definition.items() if value not in (None, "")}
    if "cross_account_urn" in checked:
        raise CbrError(
            INVALID_PARAMETER, "Cross-account replication (cross_account_urn) is not supported."
        )
    counted = [key for key in CALENDAR_COUNTS if checked.get(key, 0) > 0]
    if counted and "timezone" not in checked:
        raise CbrError(
            INVALID_PARAMETER, f"operation_definition.timezone is required with {counted[0]}."
        )
    if "timezone" in checked:
        try:
            schedule.parse_timezone(checked["timezone"])
        except ValueError as exc:
            raise CbrError(INVALID_PARAMETER, f"operation_definition.{exc}") from None
    if operation_type == PolicyType.REPLICATION:
        _check_replication_target(settings, ctx, checked)
    else:
        given = [key for key in DESTINATION_FIELDS if key in checked]
        if given:
            raise CbrError(
                INVALID_PARAMETER,
                f"operation_definition.{given[0]} is for replication policies only.",
            )
    return checked


def _check_replication_target(
    settings: Settings, ctx: AuthContext, definition: dict[str, Any]
) -> None:
    missing = [key for key in DESTINATION_FIELDS if key not in definition]
    if missing:
        raise CbrError(
            INVALID_PARAMETER,
            f"A replication policy needs operation_definition.{missing[0]}.",
        )
    region = definition["destination_region"]
    if region not in settings.replication_destinations(ctx.region):
        raise CbrError(
            REGION_CANNOT_REPLICATE, f"Region {ctx.region} cannot replicate to {region!r}."
        )


# --- bindings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BindingView:
    """A binding as the associate/dissociate answers show it."""

    vault_id: str
    policy_id: str
    destination_vault_id: str | None


def associate(
    db: Database,
    settings: Settings,
    ctx: AuthContext,
    vault_id: str,
    policy_ids: Sequence[str],
    destination_vault_id: str | None,
) -> list[BindingView]:
    """Bind the policies to the vault, all or none; `destination_vault_id` is the
    replication vault a replication policy among them copies into."""
    if len(set(policy_ids)) != len(policy_ids):
        raise CbrError(INVALID_PARAMETER, "add_policy_ids names a policy twice.")
    with db.transaction() as session:
        # The vault row serialises bindings to one vault (one policy of each type).
        vault = session.get(Vault, vault_id, with_for_update=True)
        if vault is None or vault.project_id != ctx.project_id:
            raise CbrError(VAULT_NOT_FOUND, f"Vault {vault_id} not found")
        chosen = [get_in_session(session, ctx, policy_id) for policy_id in policy_ids]
        if destination_vault_id is not None and not any(
            policy.operation_type == PolicyType.REPLICATION for policy in chosen
        ):
            raise CbrError(
                INVALID_PARAMETER, "destination_vault_id is only for a replication policy."
            )
        return [
            _bind(session, settings, ctx, vault, policy, destination_vault_id) for policy in chosen
        ]


def create_bound_vault(
    db: Database, ctx: AuthContext, spec: vaults.VaultSpec, backup_policy_id: str
) -> Vault:
    """Create a vault bound to a backup policy, in one transaction (`backup_policy_id` on
    vault create): an unknown policy creates no vault."""
    with db.transaction() as session:
        policy = get_in_session(session, ctx, backup_policy_id)
        vault = vaults.insert(session, ctx, spec)
        if policy.operation_type != PolicyType.BACKUP:
            raise CbrError(
                POLICY_NOT_APPLICABLE,
                f"backup_policy_id names a {policy.operation_type} policy; bind it with"
                " associatepolicy and a destination_vault_id.",
            )
        _check_backup_binding(vault, policy)
        session.add(PolicyBinding(policy_id=policy.id, vault_id=vault.id))
        session.flush()
        return vault


def _bind(
    session: Session,
    settings: Settings,
    ctx: AuthContext,
    vault: Vault,
    policy: Policy,
    destination_vault_id: str | None,
) -> BindingView:
    destination: str | None = None
    if policy.operation_type == PolicyType.REPLICATION:
        destination = _replication_destination(
            session, settings, ctx, vault, policy, destination_vault_id
        )
    else:
        _check_backup_binding(vault, policy)
    current = _binding_of_type(session, vault.id, policy.operation_type)
    if current is not None:
        if current.policy_id == policy.id and current.destination_vault_id == destination:
            return _view(current)  # already bound just so: binding again changes nothing
        raise CbrError(
            POLICY_NOT_APPLICABLE,
            f"The vault is already bound to {policy.operation_type} policy {current.policy_id}"
            f"{' with another destination vault' if current.policy_id == policy.id else ''};"
            " dissociate it first.",
        )
    binding = PolicyBinding(
        policy_id=policy.id, vault_id=vault.id, destination_vault_id=destination
    )
    session.add(binding)
    session.flush()
    return _view(binding)


def _check_backup_binding(vault: Vault, policy: Policy) -> None:
    if vault.protect_type != "backup":
        raise CbrError(
            POLICY_NOT_APPLICABLE,
            f"Backup policy {policy.id} cannot apply to a replication vault: it holds replicas"
            " only.",
        )


def _replication_destination(
    session: Session,
    settings: Settings,
    ctx: AuthContext,
    vault: Vault,
    policy: Policy,
    destination_vault_id: str | None,
) -> str:
    if destination_vault_id is None:
        raise CbrError(
            INVALID_PARAMETER,
            f"Binding replication policy {policy.id} needs destination_vault_id.",
        )
    definition = policy.operation_definition
    target = Destination(
        definition["destination_region"], definition["destination_project_id"], destination_vault_id
    )
    return replication.check_destination(session, settings, ctx, vault, target).id


def _binding_of_type(session: Session, vault_id: str, operation_type: str) -> PolicyBinding | None:
    return session.scalar(
        select(PolicyBinding)
        .join(Policy, Policy.id == PolicyBinding.policy_id)
        .where(PolicyBinding.vault_id == vault_id, Policy.operation_type == operation_type)
    )


def dissociate(db: Database, ctx: AuthContext, vault_id: str, policy_id: str) -> BindingView:
    with db.transaction() as session:
        vault = vaults.get_in_session(session, ctx, vault_id)
        policy = get_in_session(session, ctx, policy_id)
        binding = session.get(PolicyBinding, (policy.id, vault.id))
        if binding is None:
            raise CbrError(
                VAULT_NOT_BOUND_TO_POLICY, f"The vault is not bound to policy {policy_id}."
            )
        view = _view(binding)
        session.delete(binding)
        return view


def _view(binding: PolicyBinding) -> BindingView:
    return BindingView(binding.vault_id, binding.policy_id, binding.destination_vault_id)


def backup_policy_ids(db: Database, vault_ids: Iterable[str]) -> dict[str, str]:
    """Vault id -> the id of its backup policy, for the vaults that have one (the
    `backup_policy_id` of vault answers)."""
    ids = list(vault_ids)
    if not ids:
        return {}
    query = (
        select(PolicyBinding.vault_id, PolicyBinding.policy_id)
        .join(Policy, Policy.id == PolicyBinding.policy_id)
        .where(PolicyBinding.vault_id.in_(ids), Policy.operation_type == PolicyType.BACKUP)
    )
    with db.reading() as session:
        return {vault_id: policy_id for vault_id, policy_id in session.execute(query)}
