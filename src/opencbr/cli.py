"""The `opencbr` command: `serve` and the operator's `admin` commands (JSON out)."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import structlog
import typer
import uvicorn
from alembic.util.exc import CommandError as AlembicError
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from opencbr import data_dir, logs
from opencbr.db.credentials import Credential
from opencbr.db.migrate import upgrade
from opencbr.db.session import Database
from opencbr.errors import CbrError
from opencbr.services import credentials, identity
from opencbr.settings import Settings, load_settings
from opencbr.storage import probe

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

log = structlog.get_logger(__name__)

ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML configuration file.")]
ADMIN_USER = "admin"


def _open(config: Path | None, **overrides: Any) -> tuple[Settings, Database]:
    settings = _load(config, **overrides)
    logs.configure(settings)  # services may log: to stderr, never into the JSON on stdout
    return settings, _open_database(settings)


def _load(config: Path | None, **overrides: Any) -> Settings:
    """The settings, or exit with one `error: configuration error: ...` line."""
    try:
        return load_settings(config, **overrides)
    except ValidationError as exc:
        _fail(f"configuration error: {_problems(exc)}")
    except (OSError, ValueError) as exc:  # an unreadable file, bad TOML
        _fail(f"configuration error: {_one_line(str(exc))}")


def _problems(exc: ValidationError) -> str:
    # Location and message only: pydantic's text also quotes the input (a database URL
    # with its password, say) and spreads over several lines.
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
        for error in exc.errors()
    )


def _open_database(settings: Settings) -> Database:
    """The private data directory and the migrated database, or exit with one line."""
    try:
        data_dir.prepare(settings.data_dir)
    except OSError as exc:
        _fail(f"cannot use the data directory {settings.data_dir}: {exc.strerror or exc}")
    try:
        db = Database(settings.db_url)
        upgrade(db)
    except (SQLAlchemyError, AlembicError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc
        _fail(f"cannot use the database {_safe_url(settings.db_url)}: {_one_line(str(reason))}")
    return db


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(database_url)"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _print(payload: dict[str, Any]) -> None:
    typer.echo(json.dumps(payload, indent=2, sort_keys=True))


def _fail(message: str) -> NoReturn:
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


@app.callback()
def _private_files() -> None:
    """Every file and directory the service creates is its user's alone (data_dir 0700,
    its files 0600): the database, the queue and the keys of every tenant's data."""
    os.umask(data_dir.PRIVATE_UMASK)


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
) -> None:
    """Start the service (API and, by default, the embedded workers)."""
    # Order matters: the port is bound before anything is printed or started, so a busy
    # port ends the command at once; then the database, the first-start admin, storage
    # checks, the announcement, and only then the workers (with the app).
    _limit_malloc_arenas()  # before any thread starts
    settings = _load(config)
    if host or port:
        settings = _load(config, listen=f"{host or settings.host}:{port or settings.port}")
    logs.configure(settings)
    sockets = _listen(settings)
    db = _open_database(settings)
    first = _first_start(settings, db)
    _report_unusable_storage(settings)
    _announce(settings, first)
    from opencbr.app import create_app

    application = create_app(settings, db, migrate=False)
    # Everything imported so far lives as long as the process: moving it out of the
    # collector's sight turns the 100-140 ms full collections that landed in request
    # latency (bench: replicate p99) into pauses of a few milliseconds.
    gc.collect()
    gc.freeze()
    server = uvicorn.Server(
        uvicorn.Config(
            application,
            log_level=settings.log_level,
            log_config=None,  # uvicorn's lines go through opencbr.logs like every other
            access_log=False,
            lifespan="on",  # a failing start-up is an error, not "lifespan unsupported"
        )
    )
    server.run(sockets=sockets)
    if not server.started:
        raise typer.Exit(code=3)  # the app's start-up failed; uvicorn logged why


def _listen(settings: Settings) -> list[socket.socket]:
    """Listening sockets on every address `settings.host` names (as uvicorn would bind),
    or exit with one line naming the address and the reason."""
    host = settings.host.strip("[]")  # "[::1]:8080"
    sockets: list[socket.socket] = []
    try:
        addresses = socket.getaddrinfo(
            host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _name, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        reason = (exc.strerror or str(exc)).lower()
        _fail(f"cannot listen on {settings.listen}: {reason}")
    return sockets


LISTEN_BACKLOG = 2048  # uvicorn's default


def _report_unusable_storage(settings: Settings) -> None:
    """One error line per region whose storage cannot be written. The service still
    starts: the other regions work, and backups into that region fail with the reason."""
    for region in settings.regions:
        reason = probe.unusable_reason(region.storage)
        if reason is not None:
            log.error("region storage unusable", region=region.name, reason=reason)


def _announce(settings: Settings, first: dict[str, Any]) -> None:
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
    settings, db = _open(config)
    try:
        user = identity.create_user(db, settings, name, password)
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
