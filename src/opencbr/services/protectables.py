"""Protectable resources: the inventory of directory trees, disks and servers of a project.

A path is accepted only inside a root the operator configured for the project, after
resolving symlinks and `..` (the restore side relies on the same rule).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr.archive.confined import (
    DATA_KINDS,
    PathNotConfined,
    open_beneath,
    open_data,
    open_directory,
    open_root,
    opened,
)
from opencbr.archive.disk import image_size
from opencbr.archive.tree import tree_size
from opencbr.db.paging import Page, PageRequest, fetch_page
from opencbr.db.session import Database
from opencbr.db.vaults import (
    OBJECT_TYPES,
    RESOURCE_TYPES,
    Protectable,
    ProtectableVolume,
    VaultResource,
)
from opencbr.errors import INVALID_PARAMETER, RESOURCE_NOT_FOUND, CbrError
from opencbr.services.identity import AuthContext
from opencbr.settings import Settings

# protectable_type in the URL -> wire resource type
PROTECTABLE_TYPES = {
    "server": RESOURCE_TYPES["server"],
    "disk": RESOURCE_TYPES["disk"],
    "turbo": RESOURCE_TYPES["turbo"],
}


@dataclass(frozen=True)
class VolumeSpec:
    name: str
    path: str


@dataclass(frozen=True)
class ProtectableSpec:
    name: str
    path: str | None = None
    volumes: tuple[VolumeSpec, ...] = ()


def resource_type_for(protectable_type: str) -> str:
    try:
        return PROTECTABLE_TYPES[protectable_type]
    except KeyError:
        raise CbrError(
            INVALID_PARAMETER, f"protectable type must be one of {', '.join(PROTECTABLE_TYPES)}"
        ) from None


def allowed_roots(settings: Settings, ctx: AuthContext) -> list[Path]:
    return project_roots(settings, ctx.project_id, ctx.project_name)


def project_roots(settings: Settings, project_id: str, project_name: str) -> list[Path]:
    """The roots the operator configured for a project (by id or name), resolved."""
    return [
        root.path.expanduser().resolve()
        for root in settings.protectable_roots
        if root.project in (project_id, project_name)
    ]


@dataclass(frozen=True)
class Location:
    """A registered path as it must be opened: below a root, never through a symlink."""

    root: Path
    relative: str  # "" is the root itself; no "..", no leading "/"


def locate(roots: list[Path], path: str) -> Location:
    """The most specific root holding `path`, and the path below it.

    Registration stored `path` resolved inside a root; if the operator has since removed
    that root, the resource can no longer be used (RESOURCE_NOT_FOUND, answered as 400). Whether the
    components below the root are still what they were is checked when the path is opened
    (archive.confined), not here.
    """
    candidate = Path(path)
    holding = [root for root in roots if candidate == root or candidate.is_relative_to(root)]
    if not holding or "\x00" in path:
        raise CbrError(
            RESOURCE_NOT_FOUND.with_status(400),
            "The resource path is no longer inside a configured root.",
        )
    root = max(holding, key=lambda r: len(r.parts))
    relative = candidate.relative_to(root).as_posix()
    return Location(root, "" if relative == "." else relative)


def confine(settings: Settings, ctx: AuthContext, raw_path: str) -> Path:
    """The resolved path, if it lies inside one of the project's roots; else a 400."""
    if not raw_path or "\x00" in raw_path or not os.path.isabs(raw_path):
        raise CbrError(INVALID_PARAMETER, "path must be an absolute path")
    resolved = Path(raw_path).resolve()
    for root in allowed_roots(settings, ctx):
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    raise CbrError(
        INVALID_PARAMETER,
        f"path {raw_path} is not inside a protectable root configured for this project",
    )


_EXPECTED = {"tree": "a directory", "disk": "a file or block device"}


@dataclass(frozen=True)
class _Inspected:
    kind: str  # "tree" or "disk"
    node: str | None  # a disk's: "file" or "block" (what every backup will insist on)
    size: int


def _inspect(settings: Settings, ctx: AuthContext, path: Path, want: str) -> _Inspected:
    """What an existing directory, image file or block device is, and its size in bytes.

    `path` was resolved inside a root; it is opened below that root's descriptor without
    following symlinks (one swapped in since the resolution is refused), its kind read
    first from an O_PATH descriptor (opening a FIFO or a device has effects), and a
    disk's size read from a non-blocking descriptor checked to be of that kind.
    """
    location = locate(allowed_roots(settings, ctx), str(path))
    try:
        with opened(open_root(location.root)) as root_fd:
            return _inspect_beneath(root_fd, location.relative, want)
    except PathNotConfined as exc:
        raise CbrError(INVALID_PARAMETER, f"path {path} is not accessible: {exc.why}") from None
    except OSError as exc:
        raise CbrError(
            INVALID_PARAMETER, f"path {path} is not accessible: {exc.strerror}"
        ) from None
    except _WrongKind:
        expected = _EXPECTED.get(want, "a directory, file or block device")
        raise CbrError(INVALID_PARAMETER, f"path {path} must be {expected}") from None


class _WrongKind(Exception):
    pass


def _inspect_beneath(root_fd: int, relative: str, want: str) -> _Inspected:
    with opened(open_beneath(root_fd, relative, os.O_PATH)) as handle:
        mode = os.fstat(handle).st_mode
    if stat.S_ISDIR(mode) and want in ("tree", "any"):
        # Still a directory, still confined; its size is that of the data in it.
        with opened(open_directory(root_fd, relative)) as directory_fd:
            return _Inspected("tree", None, tree_size(directory_fd))
    for kind, is_kind in DATA_KINDS.items():
        if is_kind(mode) and want in ("disk", "any"):
            with opened(open_data(root_fd, relative, os.O_RDONLY, (kind,))) as fd:
                return _Inspected("disk", kind, image_size(fd))
    raise _WrongKind


def register(
    db: Database, settings: Settings, ctx: AuthContext, protectable_type: str, spec: ProtectableSpec
) -> Protectable:
    resource_type = resource_type_for(protectable_type)
    if protectable_type == "server":
        return _register_server(db, settings, ctx, spec)
    if not spec.path:
        raise CbrError(INVALID_PARAMETER, "instance.path is required")
    path = confine(settings, ctx, spec.path)
    found = _inspect(settings, ctx, path, "tree" if protectable_type == "turbo" else "disk")
    with db.transaction() as session:
        row = Protectable(
            project_id=ctx.project_id,
            type=resource_type,
            name=spec.name,
            path=str(path),
            node=found.node,
            size_bytes=found.size,
            volumes=[],
        )
        session.add(row)
        return row


def _register_server(
    db: Database, settings: Settings, ctx: AuthContext, spec: ProtectableSpec
) -> Protectable:
    if not spec.volumes:
        raise CbrError(INVALID_PARAMETER, "instance.volumes must name at least one volume")
    names = [volume.name for volume in spec.volumes]
    if len(set(names)) != len(names):
        raise CbrError(INVALID_PARAMETER, "volume names must be unique")
    volumes = []
    for position, volume in enumerate(spec.volumes):
        path = confine(settings, ctx, volume.path)
        found = _inspect(settings, ctx, path, "any")
        volumes.append(
            ProtectableVolume(
                position=position,
                name=volume.name,
                path=str(path),
                kind=found.kind,
                node=found.node,
                size_bytes=found.size,
            )
        )
    with db.transaction() as session:
        row = Protectable(
            project_id=ctx.project_id,
            type=RESOURCE_TYPES["server"],
            name=spec.name,
            size_bytes=sum(v.size_bytes for v in volumes),
            volumes=volumes,
        )
        session.add(row)
        return row


def sharing_a_path(session: Session, resource: Protectable) -> list[str]:
    """The ids of `resource` and of every resource of its project registered on one of
    its paths (as a directory, a disk or a server's volume), sorted and row-locked in that
    order (PostgreSQL: FOR UPDATE; a concurrent restore into any of them waits here)."""
    paths = [resource.path] if resource.path else [v.path for v in resource.volumes]
    direct = select(Protectable.id).where(
        Protectable.project_id == resource.project_id, Protectable.path.in_(paths)
    )
    servers = (
        select(ProtectableVolume.server_id)
        .join(Protectable, Protectable.id == ProtectableVolume.server_id)
        .where(Protectable.project_id == resource.project_id, ProtectableVolume.path.in_(paths))
    )
    ids = sorted({resource.id, *session.scalars(direct), *session.scalars(servers)})
    locked = select(Protectable.id).where(Protectable.id.in_(ids)).order_by(Protectable.id)
    session.scalars(locked.with_for_update()).all()
    return ids


def record_tree_size(session: Session, resource_id: str, size_bytes: int) -> None:
    """A directory (or a server's directory volume) was just read whole: its size is now
    what the backup found (a server's is the sum of its volumes')."""
    volume = session.get(ProtectableVolume, resource_id)
    if volume is not None:
        volume.size_bytes = size_bytes
        volume.server.size_bytes = sum(v.size_bytes for v in volume.server.volumes)
        return
    resource = session.get(Protectable, resource_id)
    if resource is not None:
        resource.size_bytes = size_bytes


def find_in_project(session: Session, project_id: str, resource_id: str) -> Protectable | None:
    row = session.get(Protectable, resource_id)
    return row if row is not None and row.project_id == project_id else None


def get(db: Database, ctx: AuthContext, protectable_type: str, resource_id: str) -> Protectable:
    resource_type = resource_type_for(protectable_type)
    with db.reading() as session:
        row = find_in_project(session, ctx.project_id, resource_id)
        if row is None or row.type != resource_type:
            raise CbrError(RESOURCE_NOT_FOUND)
        return row


@dataclass(frozen=True)
class ProtectableFilter:
    name: str | None = None
    ids: tuple[str, ...] = ()
    status: str | None = None
    # CBR: the disks of this server. A server's volumes are registered with it (its
    # `children`); a registered disk or tree belongs to no server. So the filter keeps
    # only the server itself on the server list, and nothing on the others.
    server_id: str | None = None


def list_page(
    db: Database,
    ctx: AuthContext,
    protectable_type: str,
    filters: ProtectableFilter,
    page: PageRequest,
) -> Page[Protectable]:
    resource_type = resource_type_for(protectable_type)
    query = select(Protectable).where(
        Protectable.project_id == ctx.project_id, Protectable.type == resource_type
    )
    if filters.name is not None:
        query = query.where(Protectable.name == filters.name)
    if filters.ids:
        query = query.where(Protectable.id.in_(filters.ids))
    if filters.status not in (None, "available", "active"):
        query = query.where(Protectable.id.is_(None))  # every registered resource is active
    if filters.server_id is not None:
        query = query.where(
            Protectable.id == filters.server_id, Protectable.type == RESOURCE_TYPES["server"]
        )
    with db.reading() as session:
        return fetch_page(
            session,
            query,
            Protectable.created_at,
            Protectable.id,
            page,
            Protectable.project_id == ctx.project_id,
        )


def unregister(db: Database, ctx: AuthContext, protectable_type: str, resource_id: str) -> None:
    resource_type = resource_type_for(protectable_type)
    with db.transaction() as session:
        row = find_in_project(session, ctx.project_id, resource_id)
        if row is None or row.type != resource_type:
            raise CbrError(RESOURCE_NOT_FOUND)
        binding = session.get(VaultResource, row.id)
        if binding is not None:
            raise CbrError(
                INVALID_PARAMETER,
                f"resource {row.id} is bound to vault {binding.vault_id}; remove it from the "
                "vault first (POST /v3/{project_id}/vaults/{vault_id}/removeresources, or "
                "`opencbr vault remove-resource`)",
            )
        session.delete(row)


def object_type_of(resource_type: str) -> str | None:
    return OBJECT_TYPES.get(resource_type)


def bound_vault(session: Session, resource_id: str) -> VaultResource | None:
    return session.get(VaultResource, resource_id)


def _binding(session: Session, resource_id: str) -> VaultResource | None:
    binding = session.get(VaultResource, resource_id)
    if binding is not None:
        # The vault is answered whole (its resources and tags): load it while the session
        # is open.
        _ = binding.vault.resources, binding.vault.tags
    return binding


def get_with_binding(
    db: Database, ctx: AuthContext, protectable_type: str, resource_id: str
) -> tuple[Protectable, VaultResource | None]:
    resource_type = resource_type_for(protectable_type)
    with db.reading() as session:
        row = find_in_project(session, ctx.project_id, resource_id)
        if row is None or row.type != resource_type:
            raise CbrError(RESOURCE_NOT_FOUND)
        return row, _binding(session, row.id)


def list_with_bindings(
    db: Database,
    ctx: AuthContext,
    protectable_type: str,
    filters: ProtectableFilter,
    page: PageRequest,
) -> list[tuple[Protectable, VaultResource | None]]:
    rows = list_page(db, ctx, protectable_type, filters, page).items
    with db.reading() as session:
        return [(row, _binding(session, row.id)) for row in rows]
