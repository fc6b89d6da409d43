"""The `opencbr` command: `serve` and the operator's `admin` commands (JSON out)."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from opencbr.db.credentials import Credential
from opencbr.db.migrate import upgrade
from opencbr.db.session import Database
from opencbr.errors import CbrError
from opencbr.services import credentials, identity
from opencbr.settings import Settings, load_settings

app = typer.Typer(
    help="opencbr: self-hosted Cloud Backup and Recovery (CBR v3 API).", no_args_is_help=True
)
admin = typer.Typer(help="Operator commands; each prints JSON.", no_args_is_help=True)
project_cmd = typer.Typer(help="Projects (each belongs to one region).", no_args_is_help=True)
user_cmd = typer.Typer(help="Users.", no_args_is_help=True)
role_cmd = typer.Typer(help="Role grants.", no_args_is_help=True)
credential_cmd = typer.Typer(
    help="Permanent access keys (AK/SK) for the Huawei SDK.", no_args_is_help=True
)
app.add_typer(admin, name="admin")
admin.add_typer(project_cmd, name="project")
admin.add_typer(user_cmd, name="user")
admin.add_typer(role_cmd, name="role")
admin.add_typer(credential_cmd, name="credential")

ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML configuration file.")]
ADMIN_USER = "admin"


def _open(config: Path | None, **overrides: Any) -> tuple[Settings, Database]:
    try:
        settings = load_settings(config, **overrides)
    except (OSError, ValueError) as exc:
        _fail(f"configuration error: {exc}")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    upgrade(db)
    return settings, db


def _print(payload: dict[str, Any]) -> None:
    typer.echo(json.dumps(payload, indent=2, sort_keys=True))


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def _first_start(settings: Settings, db: Database) -> dict[str, Any]:
    """Bootstrap an admin with a random password on the first start; report where it is."""
    password_file = settings.data_dir / "admin-password"
    if not password_file.exists():
        password = secrets.token_urlsafe(18)
        password_file.touch(mode=0o600)
        password_file.write_text(password + "\n")
    password = password_file.read_text().strip()
    result = identity.bootstrap(db, settings, ADMIN_USER, password)
    return {
        "user": result.user_name,
        "password_file": str(password_file),
        "projects": result.projects,
    }


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
) -> None:
    """Start the service (API and, by default, the embedded workers)."""
    _limit_malloc_arenas()  # before any thread starts
    overrides: dict[str, Any] = {}
    if host or port:
        base = load_settings(config)
        overrides["listen"] = f"{host or base.host}:{port or base.port}"
    settings, db = _open(config, **overrides)
    first = _first_start(settings, db)
    typer.echo(f"opencbr listening on {settings.base_url}")
    typer.echo(f"  auth URL:  {settings.base_url}/identity/v3")
    typer.echo(f"  user:      {first['user']} (domain Default)")
    typer.echo(f"  password:  in {first['password_file']}")
    for region, project_id in first["projects"].items():
        typer.echo(f"  project:   {region} = {project_id} (region {region})")
    for root in settings.protectable_roots:
        if root.path.is_relative_to(settings.data_dir):  # the defaults; never operator paths
            root.path.mkdir(parents=True, exist_ok=True)
        typer.echo(f"  resources: project {root.project} may register paths under {root.path}")
    sys.stdout.flush()
    from opencbr.app import create_app

    application = create_app(settings, db, migrate=False)
    # Everything imported so far lives as long as the process: moving it out of the
    # collector's sight turns the 100-140 ms full collections that landed in request
    # latency (bench: replicate p99) into pauses of a few milliseconds.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
    )


_M_ARENA_MAX = -8  # <malloc.h>
MALLOC_ARENAS = 2


def _limit_malloc_arenas() -> None:
    """Let glibc's malloc use two arenas unless the operator set MALLOC_ARENA_MAX.

    By default a thread that contends for the allocator gets an arena of its own, up to 8
    per core, and each arena keeps the buffers freed into it. With a dozen worker, I/O and
    request threads passing ~1 MiB chunks around, that retained memory grew the server's
    RSS operation after operation (bench, server's peak during the small-files backup at
    the end of a run: 234 MiB, 204 MiB with two arenas, same speed).
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # glibc only
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


@admin.command("bootstrap")
def bootstrap_cmd(
    user: Annotated[str, typer.Option()],
    password: Annotated[str, typer.Option()],
    config: ConfigOption = None,
) -> None:
    """Create domain Default, the user, a project per region and admin grants (idempotent)."""
    settings, db = _open(config)
    result = identity.bootstrap(db, settings, user, password)
    _print(
        {
            "user": {
                "id": result.user_id,
                "name": result.user_name,
                "created": result.created_user,
            },
            "domain": {"id": result.domain_id, "name": identity.DEFAULT_DOMAIN},
            "projects": [
                {"id": pid, "name": region, "region": region}
                for region, pid in result.projects.items()
            ],
        }
    )


@project_cmd.command("create")
def project_create(
    name: Annotated[str, typer.Option()],
    region: Annotated[str, typer.Option()],
    config: ConfigOption = None,
) -> None:
    settings, db = _open(config)
    try:
        project = identity.create_project(db, settings, name, region)
    except identity.IdentityError as exc:
        _fail(str(exc))
    _print({"project": {"id": project.id, "name": project.name, "region": project.region}})


@user_cmd.command("create")
def user_create(
    name: Annotated[str, typer.Option()],
    password: Annotated[str, typer.Option()],
    config: ConfigOption = None,
) -> None:
    _settings, db = _open(config)
    try:
        user = identity.create_user(db, name, password)
    except identity.IdentityError as exc:
        _fail(str(exc))
    _print({"user": {"id": user.id, "name": user.name}})


@role_cmd.command("grant")
def role_grant(
    user: Annotated[str, typer.Option()],
    project: Annotated[str, typer.Option()],
    role: Annotated[str, typer.Option()],
    config: ConfigOption = None,
) -> None:
    _settings, db = _open(config)
    try:
        grant = identity.grant_role(db, user, project, role)
    except identity.IdentityError as exc:
        _fail(str(exc))
    _print(
        {
            "role_assignment": {
                "user_id": grant.user_id,
                "project_id": grant.project_id,
                "role": grant.role,
            }
        }
    )


def _credential_json(credential: Credential) -> dict[str, Any]:
    return {
        "access": credential.access,
        "user_id": credential.user_id,
        "status": credential.status,
        "description": credential.description,
        "create_time": credential.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


@credential_cmd.command("create")
def credential_create(
    user: Annotated[str, typer.Option(help="User name or id.")],
    description: Annotated[str, typer.Option()] = "",
    config: ConfigOption = None,
) -> None:
    """Create an access key; the secret is printed this once and cannot be shown again."""
    settings, db = _open(config)
    try:
        created = credentials.create(db, credentials.secret_box(settings), None, user, description)
    except CbrError as exc:
        _fail(exc.detail)
    _print({**_credential_json(created.credential), "secret": created.secret})


@credential_cmd.command("list")
def credential_list(
    user: Annotated[str, typer.Option(help="User name or id.")],
    config: ConfigOption = None,
) -> None:
    _settings, db = _open(config)
    try:
        found = credentials.list_for_user(db, None, user)
    except CbrError as exc:
        _fail(exc.detail)
    _print({"credentials": [_credential_json(credential) for credential in found]})


@credential_cmd.command("delete")
def credential_delete(
    access: Annotated[str, typer.Option(help="The access key id (AK).")],
    config: ConfigOption = None,
) -> None:
    _settings, db = _open(config)
    try:
        credentials.delete(db, None, access)
    except CbrError as exc:
        _fail(exc.detail)
    _print({"deleted": access})


def main() -> None:
    app()
