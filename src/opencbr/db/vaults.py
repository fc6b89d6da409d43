"""Vault models: vaults and the protectable resources bound to them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, false, update
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from opencbr.db.base import Base, new_uuid, utcnow
from opencbr.db.status import MigrationStatus, ProtectStatus, VaultStatus

# object_type -> provider_id (cbr-api.md §3.3)
PROVIDER_IDS = {
    "server": "0daac4c5-6707-4851-97ba-169e36266b66",
    "disk": "d1603440-187d-4516-af25-121250c7cc97",
    "turbo": "3f3c3220-245c-4805-b811-758870015881",
}
# object_type -> resource type on the wire
RESOURCE_TYPES = {
    "server": "OS::Nova::Server",
    "disk": "OS::Cinder::Volume",
    "turbo": "OS::Sfs::Turbo",
}
OBJECT_TYPES = {resource_type: object_type for object_type, resource_type in RESOURCE_TYPES.items()}


class Vault(Base):
    __tablename__ = "vaults"
    __table_args__ = (Index("ix_vaults_project_created", "project_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    region: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64), index=True)
    description: Mapped[str | None] = mapped_column(String(255))
    object_type: Mapped[str] = mapped_column(String(16))
    protect_type: Mapped[str] = mapped_column(String(16))
    consistent_level: Mapped[str] = mapped_column(String(32), default="crash_consistent")
    cloud_type: Mapped[str] = mapped_column(String(16), default="public")
    charging_mode: Mapped[str] = mapped_column(String(16), default="post_paid")
    is_multi_az: Mapped[bool] = mapped_column(default=False)
    size_gb: Mapped[int] = mapped_column(BigInteger)
    # Unique bytes stored in this vault's chunk store (billing.used is this in MB).
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # Bytes backups in progress have stored but not committed yet: used + reserved never
    # exceeds the capacity, however many backups run at once (the sum of the backups'
    # own `reserved_bytes`; changed only by conditional UPDATEs, never read-modify-write).
    reserved_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    status: Mapped[str] = mapped_column(String(16), default=VaultStatus.AVAILABLE)
    enterprise_project_id: Mapped[str] = mapped_column(String(64), default="0")
    # New backups in it are encrypted at rest (region setting `encryption` at creation);
    # vaults from before encryption keep False, so their backups stay readable as stored.
    encrypted: Mapped[bool] = mapped_column(default=False, server_default=false())
    auto_bind: Mapped[bool] = mapped_column(default=False)
    bind_rules: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    auto_expand: Mapped[bool] = mapped_column(default=False)
    smn_notify: Mapped[bool] = mapped_column(default=True)
    threshold: Mapped[int] = mapped_column(default=80)
    locked: Mapped[bool] = mapped_column(default=False)
    availability_zone: Mapped[str | None] = mapped_column(String(32))
    backup_name_prefix: Mapped[str | None] = mapped_column(String(32))
    sys_lock_source_service: Mapped[str | None] = mapped_column(String(16))
    # Garbage collection holds the vault until then; writers wait (invariant 2).
    gc_until: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    resources: Mapped[list[VaultResource]] = relationship(
        back_populates="vault",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="VaultResource.added_at",
    )
    # The vault's tags, by key (one row each: the tag API and tag queries work on rows).
    tags: Mapped[list[VaultTag]] = relationship(
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="VaultTag.key",
    )

    @property
    def provider_id(self) -> str:
        return PROVIDER_IDS[self.object_type]

    @property
    def spec_code(self) -> str:
        if self.protect_type == "replication":
            return "vault.replication.server.normal"
        return {"server": "server", "disk": "volume", "turbo": "turbo"}[self.object_type].join(
            ("vault.backup.", ".normal")
        )


GB = 1024**3


def reserve_capacity(session: Session, vault_id: str, nbytes: int) -> bool:
    """Reserve `nbytes` of the vault's capacity if they fit; True if they did.

    One conditional UPDATE: atomic on both backends (PostgreSQL re-checks the condition
    on the row a concurrent writer just committed; SQLite has one writer at a time), so
    used + reserved never exceeds the capacity, however many backups run at once.
    """
    fits = Vault.used_bytes + Vault.reserved_bytes + nbytes <= Vault.size_gb * GB
    result = session.execute(
        update(Vault)
        .where(Vault.id == vault_id, fits)
        .values(reserved_bytes=Vault.reserved_bytes + nbytes)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def settle_capacity(session: Session, vault_id: str, *, used: int = 0, released: int = 0) -> None:
    """Add `used` committed bytes and give back `released` reserved ones, atomically
    (never read-modify-write: concurrent backups commit into the same row)."""
    session.execute(
        update(Vault)
        .where(Vault.id == vault_id)
        .values(
            used_bytes=Vault.used_bytes + used,
            reserved_bytes=Vault.reserved_bytes - released,
        )
        .execution_options(synchronize_session=False)
    )


class VaultTag(Base):
    """A tag of a vault: a key is unique per vault; the value may be empty."""

    __tablename__ = "vault_tags"
    # Tag queries ask "which vaults carry key K (with value V)": this index answers them
    # without reading every vault of the project.
    __table_args__ = (Index("ix_vault_tags_key_value", "key", "value", "vault_id"),)

    vault_id: Mapped[str] = mapped_column(
        ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(36), primary_key=True)
    value: Mapped[str] = mapped_column(String(43), default="")


class VaultResource(Base):
    """A protectable bound to a vault; a resource is in at most one vault (the unique key)."""

    __tablename__ = "vault_resources"

    resource_id: Mapped[str] = mapped_column(
        ForeignKey("protectables.id", ondelete="RESTRICT"), primary_key=True
    )
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), index=True)
    auto_protect: Mapped[bool] = mapped_column(default=True)
    protect_status: Mapped[str] = mapped_column(String(16), default=ProtectStatus.AVAILABLE)
    extra_info: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)

    vault: Mapped[Vault] = relationship(back_populates="resources")
    protectable: Mapped[Protectable] = relationship(lazy="joined")


class Protectable(Base):
    """A registered resource: a directory tree (turbo), an image/device (disk), or a server."""

    __tablename__ = "protectables"
    __table_args__ = (Index("ix_protectables_project_type", "project_id", "type", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    type: Mapped[str] = mapped_column(String(32))  # wire resource type, e.g. OS::Sfs::Turbo
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str | None] = mapped_column(String(4096))
    # A disk's node as registered: "file" or "block"; the backup opens nothing else.
    node: Mapped[str | None] = mapped_column(String(8))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    volumes: Mapped[list[ProtectableVolume]] = relationship(
        back_populates="server",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="ProtectableVolume.position",
    )


class ProtectableVolume(Base):
    """One volume of a server: a directory or an image file."""

    __tablename__ = "protectable_volumes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    server_id: Mapped[str] = mapped_column(
        ForeignKey("protectables.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column()
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(4096))
    kind: Mapped[str] = mapped_column(String(8))  # "tree" or "disk"
    node: Mapped[str | None] = mapped_column(String(8))  # a disk's: "file" or "block"
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)

    server: Mapped[Protectable] = relationship(back_populates="volumes")


class VaultMigration(Base):
    """Resources and their backups moving from one vault to another of the same project and
    type (migrateresources): leased work, resumable at every step (services/migrations.py)."""

    __tablename__ = "vault_migrations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    source_vault_id: Mapped[str] = mapped_column(
        ForeignKey("vaults.id", ondelete="CASCADE"), index=True
    )
    destination_vault_id: Mapped[str] = mapped_column(
        ForeignKey("vaults.id", ondelete="CASCADE"), index=True
    )
    resource_ids: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default=MigrationStatus.WAITING)
    # The backups (every unit: servers and their volumes) the move committed: their
    # manifests in the source are what is left to remove.
    moved_units: Mapped[list[Any]] = mapped_column(default=list)
    error_code: Mapped[str] = mapped_column(String(64), default="")
    error_message: Mapped[str] = mapped_column(String(1024), default="")
    attempts: Mapped[int] = mapped_column(default=0)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
