"""The `opencbr` command: `serve`, the operator's `admin` commands (JSON out) and the
client commands over HTTP (`opencbr.client`)."""

from __future__ import annotations

import gc
import getpass
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import structlog
import typer
from alembic.util.exc import CommandError as AlembicError
from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from opencbr import data_dir, heap, logs, metrics
from opencbr.client.commands import register as register_client_commands
from opencbr.db.credentials import Credential
from opencbr.db.migrate import has_schema, startup_lock, upgrade
from opencbr.db.session import Database
from opencbr.errors import CbrError
from opencbr.services import credentials, identity, keys
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
key_cmd = typer.Typer(help="Keys of encryption at rest.", no_args_is_help=True)
app.add_typer(admin, name="admin")
admin.add_typer(project_cmd, name="project")
admin.add_typer(user_cmd, name="user")
admin.add_typer(role_cmd, name="role")
admin.add_typer(credential_cmd, name="credential")
admin.add_typer(key_cmd, name="key")
register_client_commands(app)  # vault, resource, backup, restore, replicate, records, status

log = structlog.get_logger(__name__)

# What only `serve` and `worker` use (the queue with every task's service, the state
# gauges, the stores, uvicorn) is imported by the functions that use it: `opencbr admin`
# and the client commands would otherwise pay seconds of imports per command.

ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML configuration file.")]
ADMIN_USER = "admin"


def _open(config: Path | None, *, create: bool = False) -> tuple[Settings, Database]:
    """The settings `serve` would use (``--config``, ``OPENCBR_CONFIG`` or the defaults) and
    their database, named on stderr. Only ``create`` (bootstrap) may start a new data
    directory or database: elsewhere, a missing one means the wrong configuration."""
    settings = _load(config)
    logs.configure(settings)  # services may log: to stderr, never into the JSON on stdout
    typer.echo(_database_line(settings, config), err=True)
    if not create:
        _require_existing(settings)
    return settings, _open_database(settings, new_schema=create)


def _database_line(settings: Settings, config: Path | None) -> str:
    source = config or os.environ.get("OPENCBR_CONFIG") or "built-in defaults"
    return (
        f"database: {_safe_url(settings.db_url)} "
        f"(data_dir {settings.data_dir}, configuration {source})"
    )


def _require_existing(settings: Settings) -> None:
    hint = "name the configuration `opencbr serve` uses (--config or OPENCBR_CONFIG)"
    if not settings.data_dir.is_dir():
        _fail(f"no data directory at {settings.data_dir}: {hint}, or run `admin bootstrap`")
    database = _sqlite_file(settings.db_url)
    if database is not None and not database.exists():
        _fail(f"no database at {database}: {hint}, or run `admin bootstrap`")


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for another backend or an in-memory database)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _load(config: Path | None, **overrides: Any) -> Settings:
    """The settings, or exit with one `error: configuration error: ...` line."""
    try:
        return load_settings(config, **overrides)
    except ValidationError as exc:
        _fail(f"configuration error: {_problems(exc)}")
    except SettingsError as exc:  # an OPENCBR_* list or table that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"OPENCBR_{field.group(1).upper()}" if field else "an OPENCBR_* variable"
        _fail(f"configuration error: {name} must be JSON (a list or a table)")
    except (OSError, ValueError) as exc:  # an unreadable file, bad TOML
        _fail(f"configuration error: {_one_line(str(exc))}")


def _problems(exc: ValidationError) -> str:
    # Location and message only: pydantic's text also quotes the input (a database URL
    # with its password, say) and spreads over several lines.
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
        for error in exc.errors()
    )


def _open_database(settings: Settings, *, new_schema: bool = True) -> Database:
    """The private data directory and the migrated database, or exit with one line.
    Without `new_schema` (admin commands but bootstrap), a server database that holds no
    opencbr schema yet is refused: a mistyped database name must not start an empty
    deployment (SQLite files are checked by `_require_existing`)."""
    try:
        data_dir.prepare(settings.data_dir)
    except OSError as exc:
        _fail(f"cannot use the data directory {settings.data_dir}: {exc.strerror or exc}")
    try:
        db = Database(settings.db_url)
        if not new_schema and not db.is_sqlite and not has_schema(db):
            _fail(
                f"no opencbr database at {_safe_url(settings.db_url)}: name the configuration "
                "`opencbr serve` uses (--config or OPENCBR_CONFIG), or run `admin bootstrap`"
            )
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
    """Bootstrap an admin with a random password on the first start; report where it is.

    A process whose data directory has no password file, on a database whose admin exists
    (an API process on a second machine), writes none: its password would not be the
    admin's."""
    password_file = settings.data_dir / "admin-password"
    wrote = not password_file.exists()
    if wrote:
        password = secrets.token_urlsafe(18)
        password_file.touch(mode=0o600)
        password_file.write_text(password + "\n")
    password = password_file.read_text().strip()
    result = identity.bootstrap(db, settings, ADMIN_USER, password)
    if wrote and not result.created_user:
        password_file.unlink()
    return {
        "user": result.user_name,
        "password_file": str(password_file) if password_file.exists() else None,
        "projects": result.projects,
    }


def _require_shared_state(settings: Settings, db: Database) -> None:
    """Exit with one line when the queue does not answer, or when this process's secret
    key is not the one the database's stored secrets were sealed with (every process of
    one database must share it)."""
    from opencbr.jobs.queue import queue_problem

    problem = queue_problem(settings.queue)
    if problem is not None:
        _fail(f"cannot use the queue {_safe_url(settings.queue)}: {problem}")
    problem = credentials.key_problem(db, settings)
    if problem is not None:
        _fail(problem)
    problem = keys.key_problem(keys.Keyring(db, settings.master_key_path))
    if problem is not None:
        _fail(problem)


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
    no_worker: Annotated[
        bool,
        typer.Option(
            "--no-worker",
            help="API only: queue the work for `opencbr worker` processes; run no workers "
            "and no housekeeping here.",
        ),
    ] = False,
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            "--metrics-listen",
            help='HOST:PORT of the Prometheus listener (metrics_listen); "" for none. '
            "Each process on one machine needs its own.",
        ),
    ] = None,
) -> None:
    """Start the service (API and, by default, the embedded workers)."""
    # Order matters: the port is bound before anything is printed or started, so a busy
    # port ends the command at once; then the database, the queue and key checks, the
    # first-start admin, storage checks, the announcement, and only then the workers
    # (with the app).
    heap.limit_arenas()  # before any thread starts
    settings = _load(config)
    overrides: dict[str, Any] = {"embedded_worker": False} if no_worker else {}
    if host or port:
        overrides["listen"] = f"{host or settings.host}:{port or settings.port}"
    if metrics_listen is not None:
        overrides["metrics_listen"] = metrics_listen
    if overrides:
        settings = _load(config, **overrides)
    logs.configure(settings)
    sockets = _listen(settings)
    if settings.port == 0:  # any free port: the banner and the token catalog name the one taken
        overrides["listen"] = f"{settings.host}:{sockets[0].getsockname()[1]}"
        settings = _load(config, **overrides)
    db = _open_database(settings)
    metrics_listener = _listen_metrics(settings, db)
    with startup_lock(db):  # API processes starting together bootstrap one at a time
        _require_shared_state(settings, db)
        first = _first_start(settings, db)
    _report_unusable_storage(settings)
    _announce(settings, first, _bound_urls(sockets))
    import uvicorn

    from opencbr.app import create_app

    application = create_app(settings, db, migrate=False)
    settle_garbage_collector()
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
    if metrics_listener is not None:
        metrics_listener.stop()
    if not server.started:
        raise typer.Exit(code=3)  # the app's start-up failed; uvicorn logged why


# Full collections after this many collections of the middle generation (CPython: 10).
FULL_COLLECTION_EVERY = 100


def settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector's full collections out of request latency: each
    holds the GIL for as long as it traverses the heap, stalling every request meanwhile.

    Everything imported so far lives as long as the process: frozen, it is out of the
    collector's sight, which turned the 100-140 ms full collections that landed in request
    latency (bench: replicate p99) into pauses of a few milliseconds. But CPython starts a
    full collection every 10 middle ones once the objects promoted since the last exceed a
    quarter of the long-lived ones it counted then, and frozen objects are not counted: a
    request's few thousand objects promoted while it runs were enough. While a policy slot
    started 5,000 vaults, that was 1.7 full collections a second (5 ms of CPU on average,
    19 ms p99), the cause of most list requests over 50 ms; every 100 middle collections,
    0.2 a second, for 25 MB more peak memory (bench: 187 MB against 162 MB).
    """
    gc.collect()
    gc.freeze()
    young, middle, _full = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


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


def _listen_metrics(settings: Settings, db: Database) -> metrics.Listener | None:
    """The metrics listener with the database's state gauges (this is the one process
    that serves them), or None when `metrics_listen` is empty; exit if it cannot bind."""
    from opencbr.services.monitoring import StateCollector

    if not settings.metrics_listen:
        return None
    try:
        return metrics.start_listener(settings.metrics_listen, StateCollector(db))
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        _fail(f"cannot listen on {settings.metrics_listen} (metrics_listen): {reason}")


def _report_unusable_storage(settings: Settings) -> None:
    """One error line per region whose storage cannot be written. The service still
    starts: the other regions work, and backups into that region fail with the reason."""
    from opencbr.services.stores import store_options
    from opencbr.storage import probe

    for region in settings.regions:
        reason = probe.unusable_reason(region.storage, store_options(region))
        if reason is not None:
            log.error("region storage unusable", region=region.name, reason=reason)


def _bound_urls(sockets: list[socket.socket]) -> list[str]:
    """The URL of every bound socket, from the socket itself (the port is the real one
    even when `listen` asked for port 0)."""
    urls = []
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        urls.append(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
    return urls


def _announce(settings: Settings, first: dict[str, Any], bound: list[str]) -> None:
    # Printed once every socket is bound: what is announced can be reached now.
    typer.echo(f"opencbr listening on {', '.join(bound)}")
    if settings.public_url:
        typer.echo(f"  public URL: {settings.base_url} (advertised in the token catalog)")
    if settings.metrics_listen:
        typer.echo(f"  metrics:   http://{settings.metrics_listen}/metrics")
    typer.echo(f"  auth URL:  {settings.base_url}/identity/v3")
    typer.echo(f"  user:      {first['user']} (domain Default)")
    if first["password_file"]:
        typer.echo(f"  password:  in {first['password_file']}")
    else:
        typer.echo(
            "  password:  as set by `opencbr admin bootstrap`, or in the admin-password file "
            "of the first process's data_dir"
        )
    typer.echo(f"  queue:     {_safe_url(settings.queue)}")
    if settings.embedded_worker:
        typer.echo(f"  workers:   {settings.worker_threads} threads in this process")
    else:
        typer.echo("  workers:   none here (--no-worker): `opencbr worker` processes run the work")
    for region, project_id in first["projects"].items():
        typer.echo(f"  project:   {region} = {project_id} (region {region})")
    for root in settings.protectable_roots:
        if root.path.is_relative_to(settings.data_dir):  # the defaults; never operator paths
            root.path.mkdir(parents=True, exist_ok=True)
        typer.echo(f"  resources: project {root.project} may register paths under {root.path}")
    sys.stdout.flush()


@app.command()
def worker(
    config: ConfigOption = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, max=64, help="Worker threads (worker_threads)."),
    ] = None,
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            "--metrics-listen",
            help="HOST:PORT of this worker's event metrics (worker_metrics_listen).",
        ),
    ] = None,
) -> None:
    """Run queued work and housekeeping (reconciler, policy slots, retention, garbage
    collection) until SIGTERM or SIGINT; no API. Any number of workers may share one
    database and queue (queue_url)."""
    from opencbr.jobs.queue import Jobs
    from opencbr.services.runtime import Runtime

    heap.limit_arenas()  # before any thread starts
    overrides: dict[str, Any] = {}
    if threads is not None:
        overrides["worker_threads"] = threads
    if metrics_listen is not None:
        overrides["worker_metrics_listen"] = metrics_listen
    settings = _load(config, **overrides)
    logs.configure(settings)
    db = _open_database(settings)
    with startup_lock(db):
        _require_shared_state(settings, db)
    listener = _listen_worker_metrics(settings)
    _report_unusable_storage(settings)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stopping.set())
    runtime = Runtime(db, settings)
    jobs = Jobs(runtime)
    jobs.start(settings.worker_threads)
    queue = _safe_url(settings.queue)
    typer.echo(f"opencbr worker: {settings.worker_threads} threads, queue {queue}")
    if listener is not None:
        typer.echo(f"  metrics:   http://{settings.worker_metrics_listen}/metrics")
    sys.stdout.flush()
    log.info("worker started", threads=settings.worker_threads, queue=queue, pid=os.getpid())
    stopping.wait()
    log.info("worker stopping: running work is handed back at its next safe point")
    jobs.stop()
    jobs.close()
    runtime.close()
    db.dispose()
    if listener is not None:
        listener.stop()


def _listen_worker_metrics(settings: Settings) -> metrics.Listener | None:
    """This worker's event metrics (tasks, bytes copied), or None when not asked for. The
    database's state gauges are the API's (one endpoint, not one per process)."""
    if not settings.worker_metrics_listen:
        return None
    try:
        return metrics.start_listener(settings.worker_metrics_listen)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        _fail(
            f"cannot listen on {settings.worker_metrics_listen} (worker_metrics_listen): {reason}"
        )


# --- admin: passwords ----------------------------------------------------------------

PasswordOption = Annotated[
    str | None,
    typer.Option(
        "--password",
        help="The password on the command line: visible to other users (ps); for old scripts.",
        show_default=False,
    ),
]
PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]
ARGV_PASSWORD_WARNING = (
    "warning: --password is visible to other users of this machine (ps, /proc) and may stay "
    "in shell history; use --password-stdin or the prompt"
)


def _password(argv: str | None, from_stdin: bool) -> str:
    """The password from the prompt (twice, without echo), stdin or, with a warning, argv."""
    if argv is not None and from_stdin:
        _fail("give --password or --password-stdin, not both")
    if argv is not None:
        typer.echo(ARGV_PASSWORD_WARNING, err=True)
        password = argv
    elif from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = _prompt_twice()
    else:
        _fail("no password: use --password-stdin, or run on a terminal to be asked for one")
    if not password:
        _fail("the password must not be empty")
    return password


def _prompt_twice() -> str:
    password = getpass.getpass("Password: ")
    if password and getpass.getpass("Repeat the password: ") != password:
        _fail("the passwords do not match")
    return password


def _identity_failure(exc: identity.IdentityError) -> NoReturn:
    _fail(str(exc))


# --- admin: bootstrap, users, roles, projects -----------------------------------------

UserArgument = Annotated[str, typer.Argument(help="User name or id.", show_default=False)]
ProjectArgument = Annotated[str, typer.Argument(help="Project name or id.", show_default=False)]


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _user_json(user: identity.UserView) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "domain": user.domain,
        "enabled": user.enabled,
        "created_at": _stamp(user.created_at),
    }


def _project_json(project: identity.ProjectView) -> dict[str, Any]:
    return {
        "id": project.id,
        "name": project.name,
        "region": project.region,
        "domain": project.domain,
        "enabled": project.enabled,
        "created_at": _stamp(project.created_at),
        "vaults": project.vaults,
    }


def _grant_json(grant: identity.Grant) -> dict[str, Any]:
    return {
        "user_id": grant.user_id,
        "user_name": grant.user_name,
        "project_id": grant.project_id,
        "project_name": grant.project_name,
        "role": grant.role,
    }


@admin.command("bootstrap")
def bootstrap_cmd(
    user: Annotated[str, typer.Option()],
    password: PasswordOption = None,
    password_stdin: PasswordStdinOption = False,
    config: ConfigOption = None,
) -> None:
    """Create domain Default, the user, a project per region and admin grants (idempotent).

    The only command that may create the data directory and the database. An existing
    user's password is left unchanged (say so on stderr): use `user set-password`.
    """
    if password is None and not password_stdin and not sys.stdin.isatty():
        # No way to get a password: on a new SQLite database (the user cannot exist yet)
        # say so before anything is created.
        database = _sqlite_file(_load(config).db_url)
        if database is not None and not database.exists():
            _password(password, password_stdin)
    settings, db = _open(config, create=True)
    exists = identity.user_exists(db, user)
    if exists:
        if password is not None or password_stdin:
            typer.echo(
                f"note: user {user!r} exists; its password was NOT changed "
                "(use `opencbr admin user set-password`)",
                err=True,
            )
        new_password = ""  # unused: the user is kept as it is
    else:
        new_password = _password(password, password_stdin)
    try:
        result = identity.bootstrap(db, settings, user, new_password)
    except identity.IdentityError as exc:
        _identity_failure(exc)
    _print(
        {
            "user": {
                "id": result.user_id,
                "name": result.user_name,
                "created": result.created_user,
                "password_set": result.created_user,
            },
            "domain": {"id": result.domain_id, "name": identity.DEFAULT_DOMAIN},
            "projects": [
                {"id": pid, "name": region, "region": region}
                for region, pid in result.projects.items()
            ],
        }
    )


@user_cmd.command("create")
def user_create(
    name: Annotated[str, typer.Option()],
    password: PasswordOption = None,
    password_stdin: PasswordStdinOption = False,
    config: ConfigOption = None,
) -> None:
    """Create a user (password from the prompt or --password-stdin)."""
    settings, db = _open(config)
    new_password = _password(password, password_stdin)
    try:
        user = identity.create_user(db, settings, name, new_password)
    except identity.IdentityError as exc:
        _identity_failure(exc)
    _print({"user": {"id": user.id, "name": user.name}})


@user_cmd.command("list")
def user_list(config: ConfigOption = None) -> None:
    _settings, db = _open(config)
    _print({"users": [_user_json(user) for user in identity.list_users(db)]})


@user_cmd.command("show")
def user_show(user: UserArgument, config: ConfigOption = None) -> None:
    """A user with its roles, access key ids and how many of its tokens are live."""
    _settings, db = _open(config)
    try:
        detail = identity.show_user(db, user)
    except identity.IdentityError as exc:
        _identity_failure(exc)
    _print(
        {
            "user": {
                **_user_json(detail.user),
                "roles": [_grant_json(grant) for grant in detail.roles],
                "access_keys": detail.access_keys,
                "live_tokens": detail.live_tokens,
            }
        }
    )


def _set_user_enabled(user: str, enabled: bool, config: Path | None) -> None:
    _settings, db = _open(config)
    try:
        view = identity.set_user_enabled(db, user, enabled)
    except identity.IdentityError as exc:
        _identity_failure(exc)
    _print({"user": _user_json(view)})


@user_cmd.command("disable")
def user_disable(user: UserArgument, config: ConfigOption = None) -> None:
    """Refuse the user's tokens and keys at once; its tokens are revoked for good."""
    _set_user_enabled(user, False, config)


@user_cmd.command("enable")
def user_enable(user: UserArgument, config: ConfigOption = None) -> None:
    """Let the user log in again (its access keys work again; old tokens do not)."""
    _set_user_enabled(user, True, config)


@user_cmd.command("delete")
def user_delete(user: UserArgument, config: ConfigOption = None) -> None:
    """Delete the user with its role grants, tokens and access keys."""
    _settings, db = _open(config)
    try:
        view = identity.delete_user(db, user)
    except identity.IdentityError as exc:
        _identity_failure(exc)
    _print({"deleted": {"user": _user_json(view)}})


@user_cmd.command("set-password")
def user_set_password(
    user: UserArgument,
    password: PasswordOption = None,
    password_stdin: PasswordStdinOption = False,
    config: ConfigOption = None,
) -> None:
    """Set a user's password; its tokens are revoked (its access keys are kept)."""
    settings, db = _open(config)
    new_password = _password(password, password_stdin)
    try:
        view = identity.set_password(db, settings, user, new_password)
    except identity.IdentityError as exc:
        _identity_failure(exc)
    _print({"user": _user_json(view), "password_set": True, "tokens_revoked": True})


@role_cmd.command("grant")
def role_grant(
    user: Annotated[str, typer.Option()],
    project: Annotated[str, typer.Option()],
    role: Annotated[str, typer.Option()],
    config: ConfigOption = None,
) -> None:
    """Give the user a role in the project (replacing the role it had there)."""
    _settings, db = _open(config)
    try:
        grant = identity.grant_role(db, user, project, role)
    except identity.IdentityError as exc:
        _identity_failure(exc)
    _print(
        {
            "role_assignment": {
                "user_id": grant.user_id,
                "project_id": grant.project_id,
                "role": grant.role,
            }
        }
    )


@role_cmd.command("list")
def role_list(
    user: Annotated[str | None, typer.Option(help="Only this user's grants.")] = None,
    project: Annotated[str | None, typer.Option(help="Only grants in this project.")] = None,
    config: ConfigOption = None,
) -> None:
    _settings, db = _open(config)
    try:
        grants = identity.list_grants(db, user, project)
    except identity.IdentityError as exc:
        _identity_failure(exc)
    _print({"role_assignments": [_grant_json(grant) for grant in grants]})


@role_cmd.command("revoke")
def role_revoke(
    user: Annotated[str, typer.Option()],
    project: Annotated[str, typer.Option()],
    config: ConfigOption = None,
) -> None:
    """Take the user's role in the project away; its tokens there are refused at once."""
    _settings, db = _open(config)
    try:
        grant = identity.revoke_role(db, user, project)
    except identity.IdentityError as exc:
        _identity_failure(exc)
    _print({"revoked": _grant_json(grant)})


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
        _identity_failure(exc)
    _print({"project": {"id": project.id, "name": project.name, "region": project.region}})


@project_cmd.command("list")
def project_list(config: ConfigOption = None) -> None:
    _settings, db = _open(config)
    _print({"projects": [_project_json(project) for project in identity.list_project_views(db)]})


def _set_project_enabled(project: str, enabled: bool, config: Path | None) -> None:
    _settings, db = _open(config)
    try:
        view = identity.set_project_enabled(db, project, enabled)
    except identity.IdentityError as exc:
        _identity_failure(exc)
    _print({"project": _project_json(view)})


@project_cmd.command("disable")
def project_disable(project: ProjectArgument, config: ConfigOption = None) -> None:
    """Refuse every token and key in the project at once; its tokens are revoked for good.
    Its vaults and backups are kept."""
    _set_project_enabled(project, False, config)


@project_cmd.command("enable")
def project_enable(project: ProjectArgument, config: ConfigOption = None) -> None:
    _set_project_enabled(project, True, config)


@project_cmd.command("delete")
def project_delete(project: ProjectArgument, config: ConfigOption = None) -> None:
    """Delete a project without vaults, with its grants, tokens, resources and history."""
    _settings, db = _open(config)
    try:
        view = identity.delete_project(db, project)
    except identity.IdentityError as exc:
        _identity_failure(exc)
    _print({"deleted": {"project": _project_json(view)}})


@key_cmd.command("rotate")
def key_rotate(
    new_master_key_file: Annotated[
        Path | None,
        typer.Option(
            help="Re-wrap every data key and the naming secret under the master key in this "
            "file (stored data is not touched); then give every process this file."
        ),
    ] = None,
    project: Annotated[
        str | None, typer.Option(help="With --data-key: the project (name or id).")
    ] = None,
    data_key: Annotated[
        bool,
        typer.Option(
            "--data-key",
            help="Start a new data key for --project: new chunks use it, older ones stay readable.",
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Rotate the master key (crash-safe: run it again to finish), or a project's data key."""
    settings, db = _open(config)
    try:
        old = keys.MasterKey.load(settings.master_key_path, create=False)
        problem = keys.key_problem(keys.Keyring(db, settings.master_key_path))
        if problem is not None:
            _fail(problem)
        if data_key:
            _print({"data_key": _new_data_key(db, old, project)})
        elif new_master_key_file is not None:
            new = keys.MasterKey.load(new_master_key_file.expanduser(), create=False)
            rows = keys.rotate_master(db, old, new)
            _print({"rotated": {"keys": rows, "master_key_id": new.id}})
        else:
            _fail("name --new-master-key-file, or --project with --data-key")
    except keys.KeyringError as exc:
        _fail(str(exc))


def _new_data_key(db: Database, master: keys.MasterKey, project: str | None) -> dict[str, Any]:
    with db.reading() as session:
        found = identity.find_project(session, project or "")
        project_id = found.id if found is not None else None
    if project_id is None:
        _fail(f"no project {project!r}: name it with --project")
    return {"project_id": project_id, "key_id": keys.new_data_key(db, master, project_id)}


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
    problem = credentials.key_problem(db, settings)
    if problem is not None:
        _fail(problem)
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
