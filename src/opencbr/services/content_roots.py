"""Content roots of backups and replicas (the encoding is `archive.content_root`).

A backup's root is recorded when it is committed: a tree or disk unit's from the manifest
it wrote, a server's from its volumes' roots. A replica's destination recomputes each
unit's root from its own copy of the manifest (read back from the destination store) and
its own chunk index (every chunk indexed, intact, of the manifest's length), after the
chunks are durable and before the replica is published; a root that differs from the
source's fails the record (REPLICA_IMPORT_FAILED, "content root mismatch") and nothing is
published. The record keeps the root it verified (`verified_root`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr.archive.content_root import server_root, unit_root
from opencbr.archive.manifest import Manifest
from opencbr.archive.sink import ArchiveError, ChunkRef
from opencbr.db.backups import Backup, ReplicationRecord, VaultChunk
from opencbr.db.chunks import batched
from opencbr.db.session import Database
from opencbr.errors import REPLICA_IMPORT_FAILED, CbrError
from opencbr.services.stores import PLAIN, VaultCodec
from opencbr.storage.layout import manifest_name
from opencbr.storage.store import ChunkStore


def of_manifest(manifest: Manifest) -> str:
    """The root of the unit `manifest` describes, hex."""
    return unit_root(manifest.chunks, manifest.catalog).hex()


def of_volumes(children: Sequence[Backup]) -> str | None:
    """A server backup's root from its volumes' roots; None while one has none."""
    if any(child.content_root is None for child in children):
        return None
    volumes = [(c.resource_name, bytes.fromhex(c.content_root or "")) for c in children]
    return server_root(volumes).hex()


@dataclass
class Verified:
    """What a replica's destination recomputed: each replica unit's root, and the
    replica's own (a server's over its volumes; a unit's own otherwise)."""

    units: dict[str, str] = field(default_factory=dict)  # replica unit id -> root
    root: str | None = None


def verify_replica(
    db: Database,
    dest: ChunkStore,
    dest_vault_id: str,
    units: Sequence[tuple[str, str]],
    source_manifests: dict[str, Manifest],
    codec: VaultCodec = PLAIN,
) -> Verified:
    """Recompute each replica unit's root at the destination and compare it with its
    source's: the root recorded at the source's commit, or (a source from before roots
    were recorded) the one of the source manifest as read. Raises CbrError 1006 on the
    first disagreement, naming the backup and why."""
    verified = Verified()
    with db.reading() as session:
        expected = _source_roots(session, [unit_id for unit_id, _r in units])
        names = _unit_names(session, [replica_id for _u, replica_id in units])
        for unit_id, replica_id in units:
            recorded = expected.get(unit_id) or of_manifest(source_manifests[replica_id])
            manifest = _destination_manifest(dest, codec, unit_id, replica_id)
            root = _indexed_root(session, dest_vault_id, unit_id, manifest)
            if root != recorded:
                raise _mismatch(unit_id, f"the destination computes {root}, the source {recorded}")
            verified.units[replica_id] = root
    if len(units) == 1 and units[0][1] not in names:
        verified.root = verified.units[units[0][1]]  # a tree or disk backup: its own root
    else:
        volumes = [(names[r], bytes.fromhex(root)) for r, root in verified.units.items()]
        verified.root = server_root(volumes).hex()
    return verified


def _source_roots(session: Session, unit_ids: list[str]) -> dict[str, str | None]:
    rows = session.execute(select(Backup.id, Backup.content_root).where(Backup.id.in_(unit_ids)))
    return {backup_id: root for backup_id, root in rows}


def _unit_names(session: Session, replica_ids: list[str]) -> dict[str, str]:
    """The volume names of replica units that are volumes of a server (by id)."""
    rows = session.execute(
        select(Backup.id, Backup.resource_name).where(
            Backup.id.in_(replica_ids), Backup.parent_id.is_not(None)
        )
    )
    return {backup_id: name for backup_id, name in rows}


def _destination_manifest(
    dest: ChunkStore, codec: VaultCodec, unit_id: str, replica_id: str
) -> Manifest:
    """The replica unit's manifest as the destination holds it (opened with `codec` when
    sealed)."""
    try:
        return Manifest.from_bytes(codec.get_manifest(dest, manifest_name(replica_id)))
    except ArchiveError as exc:
        raise _mismatch(unit_id, f"the destination's manifest does not read ({exc})") from exc


def _indexed_root(session: Session, vault_id: str, unit_id: str, manifest: Manifest) -> str:
    """The unit's root over the manifest's digests with the lengths the destination's
    index records: a chunk the index lacks, or holds damaged, fails at once."""
    digests = sorted(manifest.digests())
    lengths: dict[str, int] = {}
    for batch in batched(digests):
        rows = session.execute(
            select(VaultChunk.digest, VaultChunk.plain_size).where(
                VaultChunk.vault_id == vault_id,
                VaultChunk.digest.in_(batch),
                VaultChunk.damaged_at.is_(None),
            )
        )
        lengths.update({digest: size for digest, size in rows})
    absent = [digest for digest in digests if digest not in lengths]
    if absent:
        raise _mismatch(unit_id, f"the destination's index lacks chunk {absent[0]}")

    def indexed(refs: Sequence[ChunkRef]) -> list[ChunkRef]:
        return [ChunkRef(ref.digest, lengths[ref.digest]) for ref in refs]

    return unit_root(indexed(manifest.chunks), indexed(manifest.catalog)).hex()


def _mismatch(unit_id: str, why: str) -> CbrError:
    return CbrError(
        REPLICA_IMPORT_FAILED,
        f"content root mismatch for backup {unit_id}: {why}; the replica is not published.",
    )


def publish_verified(session: Session, record: ReplicationRecord, verified: Verified) -> None:
    """Record the roots the destination verified on the replica's rows and the record."""
    for replica_id, root in verified.units.items():
        unit = session.get(Backup, replica_id)
        if unit is not None:
            unit.content_root = root
    replica = session.get(Backup, record.destination_backup_id or "")
    if replica is not None:
        replica.content_root = verified.root
    record.verified_root = verified.root
