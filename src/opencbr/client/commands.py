"""The client commands of `opencbr` (typer): vault, resource, backup, restore, replicate,
records, status. `register(app)` adds them to the `opencbr` command.

Every command takes `--os-cloud NAME` (else `OS_CLOUD`, else the `OS_*` variables: see
`config`) and `-f table|json`; `--wait` follows the work it started (see `progress`) and
exits 1 with the reason when the work fails. Errors are one `error:` line on stderr.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from opencbr.client import lookups
from opencbr.client.config import ConfigError, load
from opencbr.client.http import OPERATION_LOG_HEADER, ClientError, Session
from opencbr.client.output import (
    Format,
    age,
    duration,
    emit,
    emit_fields,
    emit_json,
    fail,
    size,
)
from opencbr.client.progress import Step, follow

P = ParamSpec("P")
R = TypeVar("R")

CloudOption = Annotated[
    str | None,
    typer.Option(
        "--os-cloud",
        envvar="OS_CLOUD",
        help="A cloud of clouds.yaml; without it the OS_* variables are used.",
        show_default=False,
    ),
]
FormatOption = Annotated[
    Format, typer.Option("-f", "--format", help="table (for people) or json (for programs).")
]
WaitOption = Annotated[
    bool, typer.Option("--wait", help="Follow the work until it ends; exit 1 if it fails.")
]
TimeoutOption = Annotated[
    float | None,
    typer.Option("--timeout", help="With --wait: give up waiting after SECONDS (exit 1).", min=1),
]

vault_cmd = typer.Typer(help="Vaults: where backups are kept.", no_args_is_help=True)
resource_cmd = typer.Typer(
    help="Resources: directories, disks and servers registered for backup.", no_args_is_help=True
)
backup_cmd = typer.Typer(help="Backups (restore points).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the client commands to the `opencbr` command."""
    app.add_typer(vault_cmd, name="vault")
    app.add_typer(resource_cmd, name="resource")
    app.add_typer(backup_cmd, name="backup")
    app.command("restore")(restore)
    app.command("replicate")(replicate)
    app.command("records")(records)
    app.command("status")(status)


def handled(command: Callable[P, R]) -> Callable[P, R]:
    """A command whose failures are one `error:` line and exit 1 (130 on Ctrl-C)."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (ClientError, ConfigError) as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted; work already started goes on on the server", 130)

    return run


def _session(cloud: str | None) -> Session:
    return Session(load(cloud))


def _waited(steps: list[Step]) -> None:
    """Exit 1 naming each failed step and why (after the result was printed)."""
    failures = [step for step in steps if step.failed]
    for step in failures:
        typer.echo(f"error: {step.label} failed: {step.reason or step.status}", err=True)
    if failures:
        raise typer.Exit(1)


# --- vaults ---------------------------------------------------------------------------


def _vault_row(item: dict[str, Any]) -> list[Any]:
    billing = item.get("billing") or {}
    return [
        item["id"],
        item["name"],
        billing.get("object_type"),
        billing.get("protect_type"),
        f"{billing.get('size')} GB",
        f"{billing.get('used')} MB",
        [r.get("name") or r["id"] for r in item.get("resources") or []],
    ]


VAULT_COLUMNS = ("id", "name", "type", "protect", "size", "used", "resources")


@vault_cmd.command("list")
@handled
def vault_list(cloud: CloudOption = None, fmt: FormatOption = Format.table) -> None:
    """The project's vaults."""
    vaults = list(_session(cloud).pages("/vaults", "vaults"))
    emit(fmt, vaults, VAULT_COLUMNS, [_vault_row(v) for v in vaults])


@vault_cmd.command("show")
@handled
def vault_show(
    vault: Annotated[str, typer.Argument(help="Vault name or id.")],
    cloud: CloudOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """One vault, with its resources."""
    found = lookups.vault(_session(cloud), vault)
    emit_fields(fmt, found, list(zip(VAULT_COLUMNS, _vault_row(found), strict=True)))


@vault_cmd.command("create")
@handled
def vault_create(
    name: Annotated[str, typer.Argument(help="The new vault's name.")],
    size_gb: Annotated[int, typer.Option("--size", help="Capacity in GB.", min=1)] = 100,
    kind: Annotated[
        str, typer.Option("--type", help="What it backs up: turbo (directories), disk, server.")
    ] = "turbo",
    replication: Annotated[
        bool, typer.Option("--replication", help="A vault that receives replicas.")
    ] = False,
    resource: Annotated[
        list[str] | None, typer.Option("--resource", help="Bind a resource (name or id).")
    ] = None,
    cloud: CloudOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Create a vault (backup or replication), binding resources to it."""
    if kind not in lookups.RESOURCE_TYPES:
        raise ClientError(f"--type must be one of {', '.join(lookups.RESOURCE_TYPES)}")
    session = _session(cloud)
    bound = [lookups.resource(session, ref) for ref in resource or []]
    body = {
        "vault": {
            "name": name,
            "billing": {
                "consistent_level": "crash_consistent",
                "object_type": kind,
                "protect_type": "replication" if replication else "backup",
                "size": size_gb,
            },
            "resources": [{"id": r["id"], "type": r["type"]} for r in bound],
        }
    }
    created = session.post("/vaults", body)["vault"]
    emit_fields(fmt, created, list(zip(VAULT_COLUMNS, _vault_row(created), strict=True)))


@vault_cmd.command("add-resource")
@handled
def vault_add_resource(
    vault: Annotated[str, typer.Argument(help="Vault name or id.")],
    resources: Annotated[list[str], typer.Argument(help="Resource names or ids.")],
    cloud: CloudOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Bind registered resources to the vault: its next backups include them."""
    _rebind(cloud, fmt, vault, resources, "addresources")


@vault_cmd.command("remove-resource")
@handled
def vault_remove_resource(
    vault: Annotated[str, typer.Argument(help="Vault name or id.")],
    resources: Annotated[list[str], typer.Argument(help="Resource names or ids.")],
    cloud: CloudOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Unbind resources from the vault (their backups stay in it, restorable); a resource
    no vault holds can then be unregistered."""
    _rebind(cloud, fmt, vault, resources, "removeresources")


def _rebind(cloud: str | None, fmt: Format, vault: str, resources: list[str], action: str) -> None:
    session = _session(cloud)
    found = lookups.vault(session, vault)
    chosen = [lookups.resource(session, ref) for ref in resources]
    if action == "addresources":
        body: dict[str, Any] = {"resources": [{"id": r["id"], "type": r["type"]} for r in chosen]}
    else:
        body = {"resource_ids": [r["id"] for r in chosen]}
    session.post(f"/vaults/{found['id']}/{action}", body)
    after = lookups.vault(session, found["id"])
    emit_fields(fmt, after, list(zip(VAULT_COLUMNS, _vault_row(after), strict=True)))


@vault_cmd.command("delete")
@handled
def vault_delete(
    vault: Annotated[str, typer.Argument(help="Vault name or id.")],
    cloud: CloudOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Delete a vault with every backup in it."""
    session = _session(cloud)
    found = lookups.vault(session, vault)
    session.delete(f"/vaults/{found['id']}")
    result = {"id": found["id"], "name": found["name"], "deleted": True}
    emit_fields(fmt, result, list(result.items()))


# --- resources ------------------------------------------------------------------------


def _resource_row(item: dict[str, Any]) -> list[Any]:
    bound = (item.get("protectable") or {}).get("vault") or {}
    paths = [(item.get("detail") or {}).get("path")] + [
        f"{c['name']}={(c.get('detail') or {}).get('path')}" for c in item.get("children") or []
    ]
    return [
        item["id"],
        item["name"],
        lookups.resource_kind(item),
        [p for p in paths if p],
        bound.get("name"),
    ]


RESOURCE_COLUMNS = ("id", "name", "type", "path", "vault")


@resource_cmd.command("list")
@handled
def resource_list(
    kind: Annotated[
        str | None, typer.Option("--type", help="Only this type: turbo, disk or server.")
    ] = None,
    cloud: CloudOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Registered resources, with the vault each is bound to."""
    if kind is not None and kind not in lookups.RESOURCE_TYPES:
        raise ClientError(f"--type must be one of {', '.join(lookups.RESOURCE_TYPES)}")
    found = lookups.resources(_session(cloud), [kind] if kind else lookups.RESOURCE_TYPES)
    emit(fmt, found, RESOURCE_COLUMNS, [_resource_row(r) for r in found])


@resource_cmd.command("register")
@handled
def resource_register(
    path: Annotated[
        str | None,
        typer.Argument(help="Directory or disk image on the server (not for --type server)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Default: the path's last component.")
    ] = None,
    kind: Annotated[str, typer.Option("--type", help="turbo (a directory), disk, server.")] = (
        "turbo"
    ),
    volume: Annotated[
        list[str] | None,
        typer.Option("--volume", help="A server's volume as NAME=PATH (repeat for each)."),
    ] = None,
    vault: Annotated[
        str | None, typer.Option("--vault", help="Bind it to this vault (name or id).")
    ] = None,
    cloud: CloudOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Register a resource (and bind it to a vault with --vault).

    PATH lies under a root the operator configured; a relative PATH is taken from the
    current directory."""
    if kind not in lookups.RESOURCE_TYPES:
        raise ClientError(f"--type must be one of {', '.join(lookups.RESOURCE_TYPES)}")
    instance: dict[str, Any] = {}
    if kind == "server":
        if not volume or path:
            raise ClientError("a server is registered with --volume NAME=PATH options, no PATH")
        instance["volumes"] = [_volume(spec) for spec in volume]
    elif not path:
        raise ClientError(f"a {kind} resource needs a PATH")
    else:
        instance["path"] = str(Path(path).absolute())
    instance["name"] = name or (Path(path).absolute().name if path else "")
    if not instance["name"]:
        raise ClientError("name the resource with --name")
    session = _session(cloud)
    bound_to = lookups.vault(session, vault) if vault else None
    created = session.post(f"/protectables/{kind}/instances", {"instance": instance})["instance"]
    if bound_to is not None:
        resource = {"id": created["id"], "type": created["type"]}
        session.post(f"/vaults/{bound_to['id']}/addresources", {"resources": [resource]})
        created = session.get(f"/protectables/{kind}/instances/{created['id']}")["instance"]
    emit_fields(fmt, created, list(zip(RESOURCE_COLUMNS, _resource_row(created), strict=True)))


def _volume(spec: str) -> dict[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ClientError(f"--volume {spec!r} is not NAME=PATH")
    return {"name": name, "path": str(Path(path).absolute())}


@resource_cmd.command("unregister")
@handled
def resource_unregister(
    resource: Annotated[str, typer.Argument(help="Resource name or id.")],
    cloud: CloudOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Unregister a resource (refused while a vault holds it)."""
    session = _session(cloud)
    found = lookups.resource(session, resource)
    session.delete(f"/protectables/{lookups.resource_kind(found)}/instances/{found['id']}")
    result = {"id": found["id"], "name": found["name"], "unregistered": True}
    emit_fields(fmt, result, list(result.items()))


# --- backups --------------------------------------------------------------------------


def _backup_row(item: dict[str, Any], vault_names: dict[str, str]) -> list[Any]:
    return [
        item["id"],
        item["name"],
        vault_names.get(item["vault_id"], item["vault_id"]),
        item.get("resource_name"),
        item["status"],
        item.get("image_type"),
        age(item.get("created_at")),
        size(item.get("size_bytes")),
        size(item.get("stored_bytes")),
    ]


BACKUP_COLUMNS = ("id", "name", "vault", "resource", "status", "kind", "age", "size", "stored")


def _vault_names(session: Session) -> dict[str, str]:
    return {v["id"]: v["name"] for v in session.pages("/vaults", "vaults")}


@backup_cmd.command("list")
@handled
def backup_list(
    vault: Annotated[str | None, typer.Option("--vault", help="Only this vault's.")] = None,
    resource: Annotated[
        str | None, typer.Option("--resource", help="Only this resource's (name or id).")
    ] = None,
    cloud: CloudOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Backups, newest first."""
    session = _session(cloud)
    params: dict[str, Any] = {}
    if vault:
        params["vault_id"] = lookups.vault(session, vault)["id"]
    if resource:
        params["resource_id"] = lookups.resource(session, resource)["id"]
    found = list(session.pages("/backups", "backups", params))
    names = _vault_names(session) if fmt == Format.table else {}
    emit(fmt, found, BACKUP_COLUMNS, [_backup_row(b, names) for b in found])


@backup_cmd.command("show")
@handled
def backup_show(
    backup: Annotated[str, typer.Argument(help="Backup id (or its name, if only one has it).")],
    cloud: CloudOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """One backup, with its replication records."""
    session = _session(cloud)
    found = lookups.backup(session, backup)
    names = _vault_names(session) if fmt == Format.table else {}
    fields = list(zip(BACKUP_COLUMNS, _backup_row(found, names), strict=True))
    fields += [
        ("created_at", found.get("created_at")),
        ("fail_reason", found.get("fail_reason")),
        ("warnings", len(found.get("warnings") or [])),
        ("damaged_chunks", found.get("damaged_chunks")),
        ("source_backup_id", found.get("source_backup_id")),
    ]
    fields += [
        (f"replication {r['destination_region']}", f"{r['status']} {r['destination_vault_id']}")
        for r in found.get("replication_records") or []
    ]
    emit_fields(fmt, found, fields)


@backup_cmd.command("delete")
@handled
def backup_delete(
    backup: Annotated[str, typer.Argument(help="Backup id (or its name, if only one has it).")],
    cloud: CloudOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Delete a backup (its data goes once no other backup needs it)."""
    session = _session(cloud)
    found = lookups.backup(session, backup)
    session.delete(f"/backups/{found['id']}")
    result = {"id": found["id"], "name": found["name"], "deleted": True}
    emit_fields(fmt, result, list(result.items()))


@backup_cmd.command("now")
@handled
def backup_now(
    vault: Annotated[str, typer.Argument(help="Vault name or id.")],
    name: Annotated[str | None, typer.Option("--name", help="The backups' name.")] = None,
    resource: Annotated[
        list[str] | None,
        typer.Option("--resource", help="Only this resource of the vault (repeatable)."),
    ] = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    cloud: CloudOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Back up a vault's resources now."""
    session = _session(cloud)
    found = lookups.vault(session, vault)
    parameters: dict[str, Any] = {}
    if name:
        parameters["name"] = name
    if resource:
        parameters["resources"] = [lookups.resource(session, ref)["id"] for ref in resource]
    body = {"checkpoint": {"vault_id": found["id"], "parameters": parameters}}
    checkpoint = session.post("/checkpoints", body)["checkpoint"]
    made = list(session.pages("/backups", "backups", {"checkpoint_id": checkpoint["id"]}))
    steps: list[Step] = []
    if wait and made:  # one backup per resource, made with the checkpoint
        steps = follow(lookups.backup_logs(session, checkpoint), timeout=timeout, what="backup")
        checkpoint = session.get(f"/checkpoints/{checkpoint['id']}")["checkpoint"]
        made = list(session.pages("/backups", "backups", {"checkpoint_id": checkpoint["id"]}))
    names = {found["id"]: found["name"]}
    if fmt == Format.json:
        emit_json({"checkpoint": checkpoint, "backups": made})
    else:
        emit(fmt, None, BACKUP_COLUMNS, [_backup_row(b, names) for b in made])
    _waited(steps)


# --- restore --------------------------------------------------------------------------


@handled
def restore(
    backup: Annotated[str, typer.Argument(help="Backup id (or its name, if only one has it).")],
    to: Annotated[
        str | None,
        typer.Option("--to", help="Another registered resource (name or id) to restore into."),
    ] = None,
    path: Annotated[
        str | None,
        typer.Option("--path", help="A subdirectory of the target to restore into (trees)."),
    ] = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    cloud: CloudOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Restore a backup into its resource, or another one of the same type."""
    session = _session(cloud)
    found = lookups.backup(session, backup)
    body: dict[str, Any] = {}
    if to:
        target = lookups.resource(session, to)
        key = {"disk": "volume_id", "server": "server_id"}.get(
            lookups.resource_kind(found), "resource_id"
        )
        body[key] = target["id"]
    if path:
        body["details"] = {"destination_path": path}
    answer = session.call("POST", f"/backups/{found['id']}/restore", body={"restore": body})
    log_id = answer.headers.get(OPERATION_LOG_HEADER)
    if not log_id:
        raise ClientError("the server did not name the restore's operation log (not opencbr?)")
    steps: list[Step] = []
    label = f"restore of {found['name']}"
    if wait:
        steps = follow(lookups.one_log(session, log_id, label), timeout=timeout, what="restore")
    entry = session.get(f"/operation-logs/{log_id}")["operation_log"]
    step = lookups.log_step(entry, label)
    emit_fields(
        fmt,
        {"operation_log": entry},
        [
            ("operation_log", entry["id"]),
            ("backup", found["id"]),
            ("status", entry["status"]),
            ("bytes", f"{size(step.done)} of {size(step.total)}" if step.total else ""),
            ("error", step.reason),
        ],
    )
    _waited(steps)


# --- replication ----------------------------------------------------------------------


@handled
def replicate(
    vault: Annotated[
        str | None, typer.Argument(help="Replicate every backup of this vault (name or id).")
    ] = None,
    backup: Annotated[
        str | None, typer.Option("--backup", help="Replicate only this backup (id or name).")
    ] = None,
    to_project: Annotated[
        str, typer.Option("--to-project", help="Destination project (name or id).")
    ] = "",
    to_vault: Annotated[
        str, typer.Option("--to-vault", help="Destination replication vault (name or id).")
    ] = "",
    to_region: Annotated[
        str | None,
        typer.Option("--to-region", help="Destination region (default: the project's)."),
    ] = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only tell what would be copied (bytes, estimated time)."),
    ] = False,
    cloud: CloudOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Copy backups to a replication vault of another region.

    Every backup of VAULT not yet there (the seed call), or one backup with --backup."""
    if bool(vault) == bool(backup):
        raise ClientError("name a VAULT, or a backup with --backup (not both)")
    if not (to_project and to_vault):
        raise ClientError("--to-project and --to-vault are required")
    session = _session(cloud)
    dest = lookups.destination(session, to_project, to_vault, to_region)
    target: dict[str, Any] = {
        "destination_project_id": dest.project_id,
        "destination_region": dest.region,
        "destination_vault_id": dest.vault_id,
    }
    if backup:
        source_id = lookups.backup(session, backup)["id"]
        path, body = f"/backups/{source_id}/replicate", {"replicate": target}
    else:
        assert vault is not None
        source_id = lookups.vault(session, vault)["id"]
        path = "/checkpoints/replicate"
        body = {"replicate": {**target, "vault_id": source_id, "auto_trigger": False}}
    if dry_run:
        _dry_run(session, path, body, fmt)
        return
    answer = session.post(path, body)
    poll: Callable[[], list[Step]]
    if backup:
        record_id = answer["replication"]["replication_record_id"]
        poll = lookups.backup_record(session, source_id, record_id)
    else:
        ids = {b["replication_record_id"] for b in answer["replication"]["backups"]}
        poll = lookups.vault_records(session, source_id, ids)
    steps = follow(poll, timeout=timeout, what="replication") if wait else poll()
    result = {**answer, "records": [_step_json(step) for step in steps]}
    rows = [[s.key, s.label, s.status, size(s.done), size(s.total), s.reason] for s in steps]
    emit(fmt, result, ("record", "of", "status", "copied", "to copy", "reason"), rows)
    if wait:
        _waited(steps)


def _dry_run(session: Session, path: str, body: dict[str, Any], fmt: Format) -> None:
    """What the replicate call would copy: a row per backup, then the total."""
    plan = session.call("POST", path, body=body, params={"dry_run": "true"}).body
    found = plan["replication"]
    seconds = found.get("estimated_seconds")
    rows = [
        [b["backup_id"], b["missing_chunks"], size(b["missing_bytes"]), "", _damaged(b)]
        for b in found["backups"]
    ]
    estimate = duration(seconds) if seconds is not None else "unknown (no copy measured yet)"
    total = ["total", found["missing_chunks"], size(found["missing_bytes"]), estimate]
    rows.append([*total, _damaged(found)])
    columns = ("backup", "chunks to copy", "bytes to copy", "estimated time", "warning")
    emit(fmt, plan, columns, rows)


def _damaged(counted: dict[str, Any]) -> str:
    """A dry run's warning: source chunks known to be damaged make the copy fail."""
    damaged = int(counted.get("damaged_chunks", 0))
    return f"{damaged} damaged source chunk(s): will fail" if damaged else ""


def _step_json(step: Step) -> dict[str, Any]:
    return {
        "id": step.key,
        "label": step.label,
        "status": step.status,
        "bytes_done": step.done,
        "bytes_total": step.total,
        "reason": step.reason,
    }


@handled
def records(
    vault: Annotated[str | None, typer.Option("--vault", help="Only this vault's.")] = None,
    cloud: CloudOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Replication records of the project's backups, newest first."""
    session = _session(cloud)
    vault_id = lookups.vault(session, vault)["id"] if vault else None
    found = lookups.records(session, vault_id)
    rows = [
        [
            r["id"],
            r["source_backup_name"],
            r["status"],
            r["destination_region"],
            r["destination_vault_id"],
            f"{(r.get('extra_info') or {}).get('progress', 0)}%",
            size((r.get("extra_info") or {}).get("bytes_copied")),
            age(r.get("created_at")),
            (r.get("extra_info") or {}).get("fail_reason"),
        ]
        for r in found
    ]
    columns = ("id", "backup", "status", "to region", "to vault", "progress", "copied", "age")
    emit(fmt, found, (*columns, "reason"), rows)


# --- status ---------------------------------------------------------------------------


@handled
def status(cloud: CloudOption = None, fmt: FormatOption = Format.table) -> None:
    """One screen: backups' age, replication lag, work in progress.

    Each vault's newest backup and its age, each replication pair's lag and last failure,
    and the work in progress with its progress."""
    session = _session(cloud)
    now = datetime.now(UTC)
    vaults = list(session.pages("/vaults", "vaults"))
    summary = {
        "vaults": [_vault_state(session, v, now) for v in vaults],
        "replication": _replication_pairs(session, now),
        "work": _work_in_progress(session),
    }
    if fmt == Format.json:
        emit_json(summary)
        return
    for columns, keys, items in (
        (
            ("vault", "newest backup", "status", "age", "last available"),
            ("name", "newest_backup", "status", "age", "last_available_age"),
            summary["vaults"],
        ),
        (
            (
                *("replication", "to region", "to vault", "lag", "pending"),
                *("last success", "last failure"),
            ),
            (
                *("vault_name", "destination_region", "destination_vault_name", "lag", "pending"),
                *("last_success_age", "last_failure"),
            ),
            summary["replication"],
        ),
        (
            ("work", "status", "on", "vault", "progress", "bytes"),
            ("operation_type", "status", "resource_name", "vault_name", "progress", "bytes"),
            summary["work"],
        ),
    ):
        emit(fmt, None, columns, [[item[key] for key in keys] for item in items])
        typer.echo()


def _vault_state(session: Session, vault: dict[str, Any], now: datetime) -> dict[str, Any]:
    newest = _first(session, {"vault_id": vault["id"]})
    available = _first(session, {"vault_id": vault["id"], "status": "available"})
    return {
        "vault_id": vault["id"],
        "name": vault["name"],
        "newest_backup": newest["name"] if newest else None,
        "newest_backup_id": newest["id"] if newest else None,
        "status": newest["status"] if newest else "no backups",
        "created_at": newest["created_at"] if newest else None,
        "age": age(newest["created_at"], now) if newest else "",
        "last_available_at": available["created_at"] if available else None,
        "last_available_age": age(available["created_at"], now) if available else "never",
        "fail_reason": newest.get("fail_reason") if newest else None,
    }


def _first(session: Session, params: dict[str, Any]) -> dict[str, Any] | None:
    page = session.get("/backups", {**params, "limit": 1})  # newest first
    items = page.get("backups") or []
    return items[0] if items else None


def _replication_pairs(session: Session, now: datetime) -> list[dict[str, Any]]:
    """Per (source vault, destination vault) pair, from GET /replication-status: the lag
    (age of the oldest available backup not yet copied there; 0 when caught up), the
    bytes still to copy, the last success and the last failure."""
    pairs = session.get("/replication-status").get("replication_pairs") or []
    return [_pair(pair, now) for pair in pairs]


def _pair(pair: dict[str, Any], now: datetime) -> dict[str, Any]:
    lag = int(pair["lag_seconds"])
    failure = pair.get("last_failure")
    last_success = pair.get("last_success_at")
    return {
        "vault_id": pair["vault_id"],
        "vault_name": pair["vault_name"],
        "destination_region": pair["destination_region"],
        "destination_vault_id": pair["destination_vault_id"],
        "destination_vault_name": pair["destination_vault_name"],
        "lag_seconds": lag,
        "lag": f"{duration(lag)} ago" if pair["backups_behind"] else "caught up",
        "backups_behind": pair["backups_behind"],
        "pending_bytes": pair["pending_bytes"],
        "pending": size(pair["pending_bytes"]) if pair["backups_behind"] else "",
        "last_success_age": age(last_success, now) if last_success else "never",
        "failure_streak": pair["failure_streak"],
        "last_failure": f"{age(failure['at'], now)}: {failure['reason']}" if failure else "",
    }


def _work_in_progress(session: Session) -> list[dict[str, Any]]:
    work = []
    for state in ("running", "waiting"):
        for entry in session.pages("/operation-logs", "operation_logs", {"status": state}):
            step = lookups.log_step(entry)
            work.append(
                {
                    "id": entry["id"],
                    "operation_type": entry["operation_type"],
                    "status": entry["status"],
                    "resource_name": lookups.subject_name(entry),
                    "vault_name": entry.get("vault_name"),
                    "progress": f"{step.percent}%",
                    "bytes_done": step.done,
                    "bytes_total": step.total,
                    "bytes": f"{size(step.done)} of {size(step.total)}" if step.total else "",
                }
            )
    return work
