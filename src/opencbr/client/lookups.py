"""Names to ids, and the state of running work, over the API.

A vault, backup or resource may be named by id or by name: an id wins; a name must
name exactly one (two vaults called `nightly` are refused, listing their ids).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from opencbr.client.http import ApiError, ClientError, Session
from opencbr.client.output import parse_time
from opencbr.client.progress import Step

# CLI name -> (protectable type in paths, resource type on the wire)
RESOURCE_TYPES = {
    "turbo": "OS::Sfs::Turbo",
    "disk": "OS::Cinder::Volume",
    "server": "OS::Nova::Server",
}
OBJECT_TYPES = {wire: name for name, wire in RESOURCE_TYPES.items()}
TIME = "%Y-%m-%dT%H:%M:%SZ"  # the API's query time format


def _one(kind: str, ref: str, matches: list[dict[str, Any]]) -> dict[str, Any]:
    if not matches:
        raise ClientError(f"no {kind} is named {ref!r} or has that id")
    if len(matches) > 1:
        ids = ", ".join(str(match["id"]) for match in matches)
        raise ClientError(f"{len(matches)} {kind}s are named {ref!r}; name one by id: {ids}")
    return matches[0]


def _by_id(session: Session, path: str, key: str) -> dict[str, Any] | None:
    """The object at `path`, None when the server does not know the id."""
    try:
        found: dict[str, Any] = session.get(path)[key]
    except ApiError as exc:
        if exc.status in (400, 404):
            return None
        raise
    return found


def vault(session: Session, ref: str) -> dict[str, Any]:
    found = _by_id(session, f"/vaults/{ref}", "vault")
    if found is not None:
        return found
    named = [v for v in session.pages("/vaults", "vaults", {"name": ref}) if v["name"] == ref]
    return _one("vault", ref, named)


def backup(session: Session, ref: str) -> dict[str, Any]:
    found = _by_id(session, f"/backups/{ref}", "backup")
    if found is not None:
        return found
    named = [b for b in session.pages("/backups", "backups", {"name": ref}) if b["name"] == ref]
    return _one("backup", ref, named)


def resources(session: Session, types: Iterable[str] = RESOURCE_TYPES) -> list[dict[str, Any]]:
    """Registered resources of the given CLI types (turbo, disk, server)."""
    found: list[dict[str, Any]] = []
    for kind in types:
        found.extend(session.pages(f"/protectables/{kind}/instances", "instances"))
    return found


def resource(session: Session, ref: str) -> dict[str, Any]:
    every = resources(session)
    by_id = [r for r in every if r["id"] == ref]
    return by_id[0] if by_id else _one("resource", ref, [r for r in every if r["name"] == ref])


def resource_kind(item: dict[str, Any]) -> str:
    """The CLI type (turbo, disk, server) of a resource or a backup's resource type."""
    wire = item.get("type") or item.get("resource_type") or ""
    return OBJECT_TYPES.get(wire, "turbo")


# --- replication destinations --------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    project_id: str
    region: str
    vault_id: str
    vault_name: str


def destination(
    session: Session, project_ref: str, vault_ref: str, region: str | None
) -> Destination:
    """The destination project (id or name, one of the caller's), its region (given, or
    the replication destination of this project's region where it lives) and a vault of
    it (id or name)."""
    project_id = _project_id(session, project_ref)
    regions = [region] if region else _destination_regions(session)
    for candidate in regions:
        try:
            vaults = list(
                session.pages(
                    "/vaults/external",
                    "vaults",
                    {"external_project_id": project_id, "region_id": candidate},
                )
            )
        except ApiError as exc:
            if exc.status == 400:
                continue  # not a project of this region
            raise
        matches = [v for v in vaults if vault_ref in (v["id"], v["name"])]
        by_id = [v for v in matches if v["id"] == vault_ref]
        chosen = by_id[0] if by_id else _one("destination vault", vault_ref, matches)
        return Destination(project_id, candidate, chosen["id"], chosen["name"])
    where = f"region {region}" if region else f"the regions this one replicates to ({regions})"
    raise ClientError(f"project {project_ref!r} is not a project of yours in {where}")


def _project_id(session: Session, ref: str) -> str:
    answer = session.raw("GET", "/v3/region-projects", project_header=False).body or {}
    projects = answer.get("projects") or []
    by_id = [p for p in projects if p["id"] == ref]
    named = [p for p in projects if p["name"] == ref]
    return str((by_id or [_one("project", ref, named)])[0]["id"])


def _destination_regions(session: Session) -> list[str]:
    regions = session.get("/replication-capabilities").get("regions") or []
    return [d for region in regions for d in region.get("replication_destinations") or []]


# --- following work ------------------------------------------------------------------


def log_step(entry: dict[str, Any], label: str | None = None) -> Step:
    """An operation log as a step: its status and opencbr's byte counts."""
    extra = entry.get("extra_info") or {}
    common = extra.get("common") or {}
    error = entry.get("error_info") or {}
    total = common.get("bytes_total")
    return Step(
        key=entry["id"],
        label=label or f"{entry['operation_type']} of {subject_name(entry)}",
        status=entry["status"],
        done=int(common.get("bytes_done") or 0),
        total=int(total) if total is not None else None,
        reason=_reason(error.get("code"), error.get("message")),
    )


def subject_name(entry: dict[str, Any]) -> str:
    """The name of the resource an operation log is about."""
    resource = (entry.get("extra_info") or {}).get("resource") or {}
    return str(resource.get("name") or resource.get("id") or entry["id"])


def _reason(code: str | None, message: str | None) -> str:
    return ": ".join(part for part in (code, message) if part)


def record_step(record: dict[str, Any], label: str) -> Step:
    extra = record.get("extra_info") or {}
    total = extra.get("bytes_total") or 0
    planned = bool(total) or record["status"] in ("success", "fail")
    return Step(
        key=record["id"],
        label=label,
        status=record["status"],
        done=int(extra.get("bytes_copied") or 0),
        total=int(total) if planned else None,
        reason=_reason(extra.get("fail_code"), extra.get("fail_reason")),
    )


def backup_logs(session: Session, checkpoint: dict[str, Any]) -> Callable[[], list[Step]]:
    """The backup operation logs of one checkpoint (one per resource backed up)."""
    created = parse_time(checkpoint.get("created_at"))
    params: dict[str, Any] = {
        "operation_type": "backup",
        "vault_id": checkpoint["vault"]["id"],
        # Only the newest logs of the vault: the checkpoint's are written with it.
        "start_time": (created - timedelta(minutes=1)).strftime(TIME) if created else None,
    }

    def poll() -> list[Step]:
        logs = session.pages("/operation-logs", "operation_logs", params)
        mine = [entry for entry in logs if entry.get("checkpoint_id") == checkpoint["id"]]
        return [log_step(entry) for entry in sorted(mine, key=lambda e: e["id"])]

    return poll


def one_log(session: Session, log_id: str, label: str) -> Callable[[], list[Step]]:
    def poll() -> list[Step]:
        return [log_step(session.get(f"/operation-logs/{log_id}")["operation_log"], label)]

    return poll


def vault_records(
    session: Session, vault_id: str, record_ids: set[str]
) -> Callable[[], list[Step]]:
    """The replication records of a vault replication, one step each."""

    def poll() -> list[Step]:
        steps = []
        params: dict[str, Any] = {"vault_id": vault_id, "show_replication": True}
        for item in session.pages("/backups", "backups", params):
            for record in item.get("replication_records") or []:
                if record["id"] in record_ids:
                    label = f"replication of {item['name']} ({item['id'][:8]})"
                    steps.append(record_step(record, label))
        return sorted(steps, key=lambda step: step.key)

    return poll


def backup_record(session: Session, backup_id: str, record_id: str) -> Callable[[], list[Step]]:
    def poll() -> list[Step]:
        item = session.get(f"/backups/{backup_id}")["backup"]
        records = [r for r in item.get("replication_records") or [] if r["id"] == record_id]
        return [record_step(record, f"replication of {item['name']}") for record in records]

    return poll


def records(session: Session, vault_id: str | None) -> list[dict[str, Any]]:
    """Replication records of the project's backups (of one vault), each with its source
    backup's name."""
    params: dict[str, Any] = {"show_replication": True}
    if vault_id:
        params["vault_id"] = vault_id
    found = []
    for item in session.pages("/backups", "backups", params):
        for record in item.get("replication_records") or []:
            found.append({**record, "source_backup_name": item["name"]})
    return sorted(found, key=lambda r: r.get("created_at") or "", reverse=True)
