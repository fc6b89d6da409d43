"""Backup models: checkpoints, backups (and replicas), the per-vault chunk index, the chunks
each backup references, operation logs and replication records."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    and_,
    false,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship

from opencbr.db.base import Base, new_uuid, utcnow
from opencbr.db.status import (
    LIVE_RECORD,
    BackupStatus,
    CheckpointStatus,
    MemberStatus,
    OperationStatus,
    RecordStatus,
    sql_in,
)
from opencbr.storage.layout import manifest_name

_LIVE_RECORD = text(sql_in("status", LIVE_RECORD))
_DAMAGED_CHUNK = text("damaged_at IS NOT NULL")
_SETTLED = text("finished_at IS NOT NULL")


class Checkpoint(Base):
    """One run of backing up a vault (or of receiving replicas into one)."""

    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=CheckpointStatus.PROTECTING)
    name: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(255))
    retention_duration: Mapped[int] = mapped_column(default=-1)
    incremental: Mapped[bool] = mapped_column(default=True)
    auto_trigger: Mapped[bool] = mapped_column(default=False)
    policy_id: Mapped[str | None] = mapped_column(String(36))
    skipped_resources: Mapped[list[Any]] = mapped_column(default=list)
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Backup(Base):
    """A restore point of one resource; a replica when `image_type` is `replication`.

    Server backups have one child backup per volume (`parent_id`); the children own the
    data (manifests and chunks), the parent groups them.
    """

    __tablename__ = "backups"
    __table_args__ = (
        # Exactly one replica per (source backup, destination vault): invariant 4.
        UniqueConstraint("source_backup_id", "vault_id"),
        # Lists of a project (top level or one parent's volumes, newest first) and their
        # count walk this index alone: the count of a 10,000-backup project 2.0 -> 0.4 ms,
        # where (project, created) left a table lookup per backup to test parent_id.
        Index("ix_backups_project_parent_created", "project_id", "parent_id", "created_at", "id"),
        # A vault's backups by status (what runs in it), and the choice of a vault
        # replication (its available top-level backups, oldest first), which walks this
        # index alone, in order: no table row read and no sort per backup as with the
        # (vault, status) index it replaced (10,000 backups: 31-40 -> 16-25 ms).
        Index(
            "ix_backups_vault_status_created",
            "vault_id",
            "status",
            "parent_id",
            "image_type",
            "created_at",
            "id",
        ),
        # Lists of a vault (project, top level or one parent's volumes, newest first) and
        # their count walk this index alone, whatever the page's offset.
        Index(
            "ix_backups_vault_created", "vault_id", "project_id", "parent_id", "created_at", "id"
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"))
    checkpoint_id: Mapped[str] = mapped_column(
        ForeignKey("checkpoints.id", ondelete="CASCADE"), index=True
    )
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("backups.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(255))
    image_type: Mapped[str] = mapped_column(String(16), default="backup")
    status: Mapped[str] = mapped_column(String(16), default=BackupStatus.PROTECTING)
    resource_id: Mapped[str] = mapped_column(String(36), index=True)
    resource_name: Mapped[str] = mapped_column(String(255))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_size_gb: Mapped[int] = mapped_column(BigInteger, default=0)
    provider_id: Mapped[str] = mapped_column(String(36))
    # How the data was read: "tree" (PAX tar + CDC), "disk" (fixed blocks), "server" (parent).
    kind: Mapped[str] = mapped_column(String(8))
    volume_path: Mapped[str | None] = mapped_column(String(4096))
    incremental: Mapped[bool] = mapped_column(default=True)
    # Its chunks and manifests are sealed (format version 2): set from the vault at
    # creation, and for a replica from its source (a replica is encrypted as its source is).
    encrypted: Mapped[bool] = mapped_column(default=False, server_default=false())
    auto_trigger: Mapped[bool] = mapped_column(default=False)
    # The policy whose run made this backup (or, for a replica, its record): the set a
    # policy's retention may prune.
    policy_id: Mapped[str | None] = mapped_column(String(36), index=True)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)  # logical size
    bytes_new: Mapped[int] = mapped_column(BigInteger, default=0)  # stored bytes it added
    chunk_count: Mapped[int] = mapped_column(default=0)
    fail_reason: Mapped[str | None] = mapped_column(String(1024))
    # What the read skipped or saw change (FIFOs, unreadable folders...), capped; an
    # opencbr extension on the wire.
    warnings: Mapped[list[Any]] = mapped_column(default=list, server_default=text("'[]'"))
    # Vault capacity this backup holds while it runs (see Vault.reserved_bytes).
    reserved_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    source_backup_id: Mapped[str | None] = mapped_column(String(36), index=True)
    source_region: Mapped[str | None] = mapped_column(String(255))
    # BLAKE3 over the chunks the backup is made of (archive/content_root.py), hex; set
    # when it is committed (a replica's after its destination recomputed it); null for
    # backups committed before roots were recorded.
    content_root: Mapped[str | None] = mapped_column(String(64), default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    protected_at: Mapped[datetime | None] = mapped_column(default=None)
    expired_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    if TYPE_CHECKING:
        # Chunks of this backup its vault's index marks damaged (a column property set
        # below the chunk models; 0 for a server backup, whose volumes hold the data).
        damaged_chunks: int

    children: Mapped[list[Backup]] = relationship(
        lazy="selectin",
        order_by="Backup.name",
        cascade="all, delete-orphan",
        join_depth=1,
    )

    @property
    def manifest_name(self) -> str:
        return manifest_name(self.id)

    def damaged_chunk_count(self) -> int:
        """`damaged_chunks` as read with the row; 0 for a row this session created, which
        references no chunk yet (reading it would need the session, perhaps closed).

        Read from the instance's dict: `inspect(self).attrs` would build an AttributeState
        per column, bound to the row's state in a reference cycle that only the cyclic
        garbage collector frees (39 objects per listed backup, and the full collections
        they caused held the GIL for 10-30 ms in the middle of requests)."""
        value = inspect(self).dict.get("damaged_chunks")
        return value if isinstance(value, int) else 0


class BackupMember(Base):
    """A backup shared with another project of its region (CBR's share member).

    The owner's project adds and removes members; the member project accepts or rejects
    (`status`). An accepted member lists, shows and restores the backup into its own
    registered resources; it never writes it. `vault_id` is the member's vault named on
    accepting (optional here: the data stays in the owner's vault). Deleting the backup
    removes its members (the foreign key cascades).
    """

    __tablename__ = "backup_members"
    __table_args__ = (
        UniqueConstraint("backup_id", "dest_project_id"),
        # "What is shared with me" (backup lists of the member project), by status.
        Index("ix_backup_members_dest_project", "dest_project_id", "status", "backup_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    backup_id: Mapped[str] = mapped_column(ForeignKey("backups.id", ondelete="CASCADE"))
    dest_project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=MemberStatus.PENDING)
    vault_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class VaultChunk(Base):
    """The per-vault chunk index: a row exists only once the chunk is durable in the store.

    `damaged_at` is set when a read of the chunk failed verification (or found no file):
    such a chunk no longer counts as present (dedup and replication planning write it
    again), and is cleared when a writer stores a verified copy.
    """

    __tablename__ = "vault_chunks"
    __table_args__ = (
        # Damaged chunks are rare: this index holds only them, so asking a vault for its
        # damaged chunks costs nothing in the common case.
        Index(
            "ix_vault_chunks_damaged",
            "vault_id",
            sqlite_where=_DAMAGED_CHUNK,
            postgresql_where=_DAMAGED_CHUNK,
        ),
    )

    vault_id: Mapped[str] = mapped_column(
        ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True
    )
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    plain_size: Mapped[int] = mapped_column(BigInteger)
    stored_size: Mapped[int] = mapped_column(BigInteger)
    damaged_at: Mapped[datetime | None] = mapped_column(default=None)
    # BLAKE3 of the stored bytes, recorded by the writer that verified the content when
    # it stored the chunk: copies verify against it without decoding (invariant 3).
    # Null for chunks stored before it existed (copies then verify the content digest).
    stored_digest: Mapped[str | None] = mapped_column(String(64), default=None)


class VaultVerifyState(Base):
    """Where the scheduled verify of a vault stands (services/verify.py): it checks the
    vault's chunks in digest order, a share per housekeeping pass, resuming after
    `cursor` (the last digest checked; "" = from the start) and counting the share due
    from `checked_at` (the last pass)."""

    __tablename__ = "vault_verify_state"

    vault_id: Mapped[str] = mapped_column(
        ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True
    )
    cursor: Mapped[str] = mapped_column(String(64), default="")
    checked_at: Mapped[datetime]


class BackupChunk(Base):
    """A chunk a committed backup references (garbage collection and replication planning)."""

    __tablename__ = "backup_chunks"

    backup_id: Mapped[str] = mapped_column(
        ForeignKey("backups.id", ondelete="CASCADE"), primary_key=True
    )
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    plain_size: Mapped[int] = mapped_column(BigInteger)
    stored_size: Mapped[int] = mapped_column(BigInteger)


# Walks the vault's damaged chunks (the partial index above; usually none), not the
# backup's chunks: a list of large backups stays as cheap as before.
Backup.damaged_chunks = column_property(  # type: ignore[assignment]
    select(func.count())
    .select_from(VaultChunk)
    .join(
        BackupChunk,
        and_(BackupChunk.backup_id == Backup.id, BackupChunk.digest == VaultChunk.digest),
    )
    .where(VaultChunk.vault_id == Backup.vault_id, VaultChunk.damaged_at.is_not(None))
    .correlate_except(VaultChunk, BackupChunk)
    .scalar_subquery(),
    # Read-only: a flush (a rename, a status change) must not expire it, or reading it
    # after the transaction would need the closed session.
    expire_on_flush=False,
)


class OperationLog(Base):
    """The task view of long work: backup, restore, replication, delete."""

    __tablename__ = "operation_logs"
    __table_args__ = (Index("ix_operation_logs_project_created", "project_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    operation_type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=OperationStatus.WAITING)
    progress: Mapped[int] = mapped_column(default=0)
    error_code: Mapped[str] = mapped_column(String(64), default="")
    error_message: Mapped[str] = mapped_column(String(1024), default="")
    extra_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checkpoint_id: Mapped[str | None] = mapped_column(String(36))
    policy_id: Mapped[str | None] = mapped_column(String(36))
    provider_id: Mapped[str | None] = mapped_column(String(36))
    vault_id: Mapped[str | None] = mapped_column(String(36), index=True)
    vault_name: Mapped[str | None] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(36))
    resource_name: Mapped[str | None] = mapped_column(String(255))
    resource_type: Mapped[str | None] = mapped_column(String(32))
    backup_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # Restores: [[unit backup id, kind, target path], ...] (not on the wire).
    plan: Mapped[list[Any]] = mapped_column(default=list)
    request_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ReplicationPlan(Base):
    """A vault's replication as planned by checkpoints/replicate, until its records exist.

    The call writes this one row, not a record per backup (10,000 backups: one row instead
    of 10,000 rows in five indexes), and answers with the record ids the plan will give:
    `id` followed by the index of each record (services/replication_plans.py). The plan is
    expanded into its records, and deleted in the same transaction, right after the answer,
    or first by anything that reads or writes the vault's records (a pending plan is never
    seen as anything else than its records).
    """

    __tablename__ = "replication_plans"
    # One pending plan per source vault and destination region: of two concurrent calls the
    # second to insert fails here, expands the first's plan and chooses again.
    __table_args__ = (
        UniqueConstraint("source_vault_id", "destination_region"),
        Index("ix_replication_plans_destination_vault", "destination_vault_id"),
    )

    # The first 28 characters of a UUID; each record's id appends 8 hex digits.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_region: Mapped[str] = mapped_column(String(255))
    source_vault_id: Mapped[str] = mapped_column(String(36))
    destination_project_id: Mapped[str] = mapped_column(String(32))
    destination_region: Mapped[str] = mapped_column(String(255))
    destination_vault_id: Mapped[str] = mapped_column(String(36))
    auto_trigger: Mapped[bool] = mapped_column(default=False)
    request_id: Mapped[str | None] = mapped_column(String(64))
    # The chosen backups, oldest first: "backup_id checkpoint_id project_id" lines.
    backups: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReplicationRecord(Base):
    """One backup being copied to one destination vault.

    A vault plan inserts only the record; the replica, its checkpoint and the operation log
    are created later by the worker (`destination_*_id` and `operation_log_id` stay null
    until then).
    """

    __tablename__ = "replication_records"
    __table_args__ = (
        Index("ix_replication_records_source", "source_backup_id", "status"),
        # The pairs of vaults replicated between, and each pair's records by status and
        # end (replication_status: last success, failure streak, what runs).
        Index(
            "ix_replication_records_pair",
            "source_vault_id",
            "destination_vault_id",
            "status",
            "finished_at",
        ),
        # The recent settled records between two regions (the measured replication rate).
        # Settled ones only: the records a plan inserts are not written to it.
        Index(
            "ix_replication_records_regions_finished",
            "source_region",
            "destination_region",
            "finished_at",
            sqlite_where=_SETTLED,
            postgresql_where=_SETTLED,
        ),
        # At most one live record per (source backup, destination region): of two plans of
        # the same backup that run concurrently, the second to insert fails here. (The
        # replica's own unique key fires only later, in the worker.) A backup belongs to one
        # vault, so the vault adds nothing to the key, but leading with it keeps the records
        # of one plan side by side in the index: a plan writes a quarter fewer pages.
        Index(
            "ix_replication_records_live",
            "source_vault_id",
            "source_backup_id",
            "destination_region",
            unique=True,
            sqlite_where=_LIVE_RECORD,
            postgresql_where=_LIVE_RECORD,
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    source_backup_id: Mapped[str] = mapped_column(String(36))
    source_checkpoint_id: Mapped[str] = mapped_column(String(36))
    source_project_id: Mapped[str] = mapped_column(String(32))
    source_region: Mapped[str] = mapped_column(String(255))
    # No index of its own: ix_replication_records_pair leads with it.
    source_vault_id: Mapped[str] = mapped_column(String(36))
    destination_backup_id: Mapped[str | None] = mapped_column(String(36))
    destination_checkpoint_id: Mapped[str | None] = mapped_column(String(36))
    destination_project_id: Mapped[str] = mapped_column(String(32))
    destination_region: Mapped[str] = mapped_column(String(255))
    destination_vault_id: Mapped[str] = mapped_column(String(36), index=True)
    status: Mapped[str] = mapped_column(String(24), default=RecordStatus.WAITING)
    progress: Mapped[int] = mapped_column(default=0)
    fail_code: Mapped[str] = mapped_column(String(64), default="")
    fail_reason: Mapped[str] = mapped_column(String(1024), default="")
    auto_trigger: Mapped[bool] = mapped_column(default=False)
    policy_id: Mapped[str | None] = mapped_column(String(36))
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_copied: Mapped[int] = mapped_column(BigInteger, default=0)
    chunks_total: Mapped[int] = mapped_column(default=0)
    chunks_copied: Mapped[int] = mapped_column(default=0)
    chunks_present: Mapped[int] = mapped_column(default=0)
    # The content root the destination recomputed from its own manifest and index before
    # publishing the replica (equal to the source's, or the record failed).
    verified_root: Mapped[str | None] = mapped_column(String(64), default=None)
    operation_log_id: Mapped[str | None] = mapped_column(String(36))
    # The request that planned the copy, for the operation log the worker opens.
    request_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    # When it settled (success or fail), and for a success how long the attempt that
    # finished it took, claim to commit (with `bytes_copied`: the measured rate).
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    copy_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
