"""Rows written straight into a stopped server's database: backups for the API load test,
vaults bound to policies for the scheduler measurement.

Ten thousand real backups would take the benchmark hours; the routes under test (list,
show, replicate) read only rows, so the rows are enough. They go in through opencbr's own
SQLAlchemy models (`opencbr.db.models`), so they have exactly the shape the service
writes: one checkpoint per backup, `available`, `image_type` backup, a tree backup of the
vault's resource, each referencing a few chunks that the vault's chunk index holds (the
replication planner reads those). The scheduler measurement's vaults are copies of one
vault made through the API (its rows, its resource's rows), each protecting a folder of its
own, bound to policies whose next slot is the same minute. The server must be stopped:
SQLite has one writer.
"""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import insert, inspect, select

from opencbr import clock
from opencbr.db.base import Base, new_uuids
from opencbr.db.bulk import insert_rows
from opencbr.db.models import (
    Backup,
    BackupChunk,
    Checkpoint,
    Protectable,
    Vault,
    VaultChunk,
    VaultResource,
)
from opencbr.db.policies import Policy, PolicyBinding, PolicyType
from opencbr.db.session import Database
from opencbr.services import schedule
from opencbr.settings import load_settings

CHUNKS_PER_BACKUP = 16  # 12 shared with the previous backup, 4 new: a typical daily backup
NEW_CHUNKS_PER_BACKUP = 4
CHUNK_PLAIN, CHUNK_STORED = 1 << 20, 600 << 10
ROWS_PER_STATEMENT = 2000


def seed_backups(config: Path, vault_id: str, count: int) -> list[str]:
    """Add `count` available backups to the vault; their ids, newest first."""
    db = Database(load_settings(config).db_url)
    try:
        with db.transaction() as session:
            vault = session.get(Vault, vault_id)
            binding = session.scalars(
                select(VaultResource).where(VaultResource.vault_id == vault_id)
            ).first()
            if vault is None or binding is None:
                raise RuntimeError(f"vault {vault_id} with a resource is needed to seed")
            rows = _rows(vault, binding, count)
            for model, values in rows.items():
                for start in range(0, len(values), ROWS_PER_STATEMENT):
                    session.execute(insert(model), values[start : start + ROWS_PER_STATEMENT])
            vault.used_bytes += len(rows[VaultChunk]) * CHUNK_STORED
    finally:
        db.dispose()
    return [row["id"] for row in reversed(rows[Backup])]


def _rows(vault: Vault, binding: VaultResource, count: int) -> dict[Any, list[dict[str, Any]]]:
    start = clock.now() - datetime.timedelta(hours=count + 1)  # one backup an hour, till now
    rows: dict[Any, list[dict[str, Any]]] = {
        Checkpoint: [],
        Backup: [],
        VaultChunk: [],
        BackupChunk: [],
    }
    for index in range(count):
        when = start + datetime.timedelta(hours=index)
        checkpoint_id, backup_id = str(uuid.uuid4()), str(uuid.uuid4())
        rows[Checkpoint].append(_checkpoint(vault, checkpoint_id, when))
        rows[Backup].append(_backup(vault, binding, checkpoint_id, backup_id, index, when))
        digests = [_digest(vault.id, index * NEW_CHUNKS_PER_BACKUP + n) for n in range(-12, 4)]
        rows[VaultChunk] += [_vault_chunk(vault.id, d) for d in digests[-NEW_CHUNKS_PER_BACKUP:]]
        rows[BackupChunk] += [_backup_chunk(backup_id, d) for d in digests]
    # The first backup's "shared" chunks were never made by an earlier one: index them too.
    first = [_digest(vault.id, n) for n in range(-12, 0)]
    rows[VaultChunk] += [_vault_chunk(vault.id, d) for d in first]
    return rows


def _digest(vault_id: str, number: int) -> str:
    return uuid.uuid5(uuid.NAMESPACE_OID, f"{vault_id}/{number}").hex * 2  # 64 hex characters


def _checkpoint(vault: Vault, checkpoint_id: str, when: datetime.datetime) -> dict[str, Any]:
    return {
        "id": checkpoint_id,
        "project_id": vault.project_id,
        "vault_id": vault.id,
        "status": "available",
        "created_at": when,
        "updated_at": when,
    }


def _backup(
    vault: Vault,
    binding: VaultResource,
    checkpoint_id: str,
    backup_id: str,
    index: int,
    when: datetime.datetime,
) -> dict[str, Any]:
    resource = binding.protectable
    return {
        "id": backup_id,
        "project_id": vault.project_id,
        "vault_id": vault.id,
        "checkpoint_id": checkpoint_id,
        "name": f"seeded-{index:05d}",
        "image_type": "backup",
        "status": "available",
        "resource_id": resource.id,
        "resource_name": resource.name,
        "resource_type": resource.type,
        "provider_id": vault.provider_id,
        "kind": "tree",
        "volume_path": resource.path,
        "bytes_total": CHUNKS_PER_BACKUP * CHUNK_PLAIN,
        "bytes_new": NEW_CHUNKS_PER_BACKUP * CHUNK_STORED,
        "chunk_count": CHUNKS_PER_BACKUP,
        "protected_at": when,
        "created_at": when,
        "updated_at": when,
    }


def _vault_chunk(vault_id: str, digest: str) -> dict[str, Any]:
    return {
        "vault_id": vault_id,
        "digest": digest,
        "plain_size": CHUNK_PLAIN,
        "stored_size": CHUNK_STORED,
    }


def _backup_chunk(backup_id: str, digest: str) -> dict[str, Any]:
    return {
        "backup_id": backup_id,
        "digest": digest,
        "plain_size": CHUNK_PLAIN,
        "stored_size": CHUNK_STORED,
    }


# --- vaults bound to policies (the scheduler measurement) ---------------------------------


def clone_vaults(config: Path, template_id: str, folders: list[Path]) -> list[str]:
    """One vault per folder after the first, each a copy of the template vault (made through
    the API and protecting `folders[0]`) whose resource is that folder; every vault's id,
    the template's first."""
    db = Database(load_settings(config).db_url)
    try:
        with db.transaction() as session:
            template = session.get(Vault, template_id)
            if template is None or len(template.resources) != 1:
                raise RuntimeError(f"vault {template_id} with one resource is needed to clone")
            binding = template.resources[0]
            vault_ids = new_uuids(len(folders) - 1)
            resource_ids = new_uuids(len(folders) - 1)
            now = clock.now()
            vaults, resources, bindings = [], [], []
            for index, (folder, vault_id, resource_id) in enumerate(
                zip(folders[1:], vault_ids, resource_ids, strict=True), start=1
            ):
                name = f"{template.name}-{index:05d}"
                vaults.append(
                    _columns(template)
                    | dict(id=vault_id, name=name, created_at=now, updated_at=now)
                )
                resources.append(
                    _columns(binding.protectable)
                    | dict(id=resource_id, name=name, path=str(folder), created_at=now)
                )
                bindings.append(
                    _columns(binding)
                    | dict(resource_id=resource_id, vault_id=vault_id, added_at=now)
                )
            insert_rows(session, Vault, vaults)
            insert_rows(session, Protectable, resources)
            insert_rows(session, VaultResource, bindings)
    finally:
        db.dispose()
    return [template_id, *vault_ids]


def _columns(row: Base) -> dict[str, Any]:
    return {attr.key: getattr(row, attr.key) for attr in inspect(type(row)).column_attrs}


def bind_policies(
    config: Path, vault_ids: list[str], policies: int, lead: datetime.timedelta
) -> tuple[datetime.datetime, list[str]]:
    """`policies` daily backup policies whose slot is the first whole minute at least `lead`
    from now, the vaults bound to them in turn; the slot (naive UTC) and the policy ids.

    Each policy is what the API would store: its anchor `start_time` is its creation minute
    and `next_run_at` its first slot after creation, from `schedule.Schedule`.
    """
    db = Database(load_settings(config).db_url)
    try:
        with db.transaction() as session:
            project_id = session.get_one(Vault, vault_ids[0]).project_id
            now = clock.now()
            slot = (now + lead + datetime.timedelta(minutes=1)).replace(second=0, microsecond=0)
            patterns = [f"FREQ=DAILY;INTERVAL=1;BYHOUR={slot.hour};BYMINUTE={slot.minute}"]
            start = schedule.anchor(now)
            next_run = schedule.Schedule(tuple(patterns), start).next_after(now)
            if next_run != slot:
                raise RuntimeError(f"the schedule's next slot is {next_run}, not {slot}")
            ids = new_uuids(policies)
            for number, policy_id in enumerate(ids):
                session.add(
                    Policy(
                        id=policy_id,
                        project_id=project_id,
                        name=f"bench-schedule-{number:02d}",
                        operation_type=PolicyType.BACKUP,
                        operation_definition={"max_backups": 7, "timezone": "UTC"},
                        patterns=patterns,
                        start_time=start,
                        next_run_at=next_run,
                        created_at=now,
                        updated_at=now,
                    )
                )
            session.flush()
            bound = [
                {
                    "policy_id": ids[index % policies],
                    "vault_id": vault_id,
                    "destination_vault_id": None,
                    "created_at": now,
                }
                for index, vault_id in enumerate(vault_ids)
            ]
            insert_rows(session, PolicyBinding, bound)
    finally:
        db.dispose()
    return slot, ids
