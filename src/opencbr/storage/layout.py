"""Where a vault's objects live: the one home of the names every layer builds.

    <region storage>/vaults/<vault id>/              a vault's store (`vault_location`)
      chunks/<first two hex of digest>/<digest>      its chunks (`chunk_path`)
      manifests/backup-<backup id>                   its manifests (`manifest_name`)
      tmp/                                           writes in flight (local stores)

Store URLs, manifest names and chunk paths are built here and nowhere else: a local store
makes them file paths, an S3 store keys under its prefix (`s3://BUCKET/PREFIX/vaults/<id>/
chunks/..`), so a renamed folder is one change.
"""

from __future__ import annotations

import re

VAULTS_FOLDER = "vaults"
CHUNKS_FOLDER = "chunks"
MANIFESTS_FOLDER = "manifests"
TMP_FOLDER = "tmp"
MANIFEST_PREFIX = "backup-"

_SAFE_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,255}")


def vault_location(storage_url: str, vault_id: str) -> str:
    """The URL of a vault's store under a region's storage URL (its `?options` kept).

    Raises ValueError for a vault id that could leave the region's folder.
    """
    if not _SAFE_NAME_RE.fullmatch(vault_id) or vault_id in (".", ".."):
        raise ValueError(f"invalid vault id {vault_id!r}")
    base, sep, options = storage_url.partition("?")
    return f"{base.rstrip('/')}/{VAULTS_FOLDER}/{vault_id}{sep}{options}"


def manifest_name(backup_id: str) -> str:
    """The name of the manifest that commits a backup (or one volume of a server backup)."""
    return f"{MANIFEST_PREFIX}{backup_id}"


def chunk_folder(digest: str) -> str:
    """The fan-out folder of a chunk, relative to its store's root: `chunks/<2 hex>`."""
    return f"{CHUNKS_FOLDER}/{digest[:2]}"


def chunk_path(digest: str) -> str:
    """A chunk's file, relative to its store's root: `chunks/<2 hex>/<digest>`."""
    return f"{CHUNKS_FOLDER}/{digest[:2]}/{digest}"


def chunk_folders() -> list[str]:
    """Every fan-out folder (`chunks/00` ... `chunks/ff`), in listing order."""
    return [f"{CHUNKS_FOLDER}/{prefix:02x}" for prefix in range(256)]
