"""What the API tests share: the app under test (`Env`, `serving`), request bodies, flows
(backups, restores, replication) and AK/SK signing as the Huawei SDK does it.

Test modules import from here, never from one another; fixtures live in conftest.py.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from fastapi.testclient import TestClient
from huaweicloudsdkcore.auth.credentials import BasicCredentials  # type: ignore[import-untyped]
from huaweicloudsdkcore.sdk_request import SdkRequest  # type: ignore[import-untyped]
from huaweicloudsdkcore.signer.signer import Signer  # type: ignore[import-untyped]
from sqlalchemy import Table

from opencbr.app import create_app
from opencbr.archive.manifest import Manifest
from opencbr.db.models import Base
from opencbr.db.session import Database, sqlite_file
from opencbr.jobs.queue import open_huey
from opencbr.services import identity
from opencbr.services.keys import Keyring
from opencbr.settings import ProtectableRoot, Settings
from opencbr.storage import layout
from opencbr.storage.chunk import decode_chunk
from opencbr.storage.sealing import open_manifest
from opencbr.storage.store import CorruptChunkError
from tests.polling import pauses

PASSWORD = "correct horse battery"


# --- the app under test ---------------------------------------------------------------


@dataclass
class Env:
    client: TestClient
    settings: Settings
    db: Database
    projects: dict[str, str]  # region -> project id
    roots: dict[str, Path]  # region -> protectable root
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    def token(self, region: str = "region1", user: str = "admin") -> str:
        key = (region, user)
        if key not in self._tokens:
            self._tokens[key] = issue(self.client, user, PASSWORD, self.projects[region])
        return self._tokens[key]

    def headers(self, region: str = "region1", user: str = "admin") -> dict[str, str]:
        return {"X-Auth-Token": self.token(region, user)}

    def url(self, region: str, path: str) -> str:
        return f"/v3/{self.projects[region]}{path}"

    def get(self, region: str, path: str, **kwargs: Any) -> Any:
        return self.client.get(self.url(region, path), headers=self.headers(region), **kwargs)

    def post(self, region: str, path: str, body: Any, **kwargs: Any) -> Any:
        return self.client.post(
            self.url(region, path), json=body, headers=self.headers(region), **kwargs
        )

    def put(self, region: str, path: str, body: Any) -> Any:
        return self.client.put(self.url(region, path), json=body, headers=self.headers(region))

    def delete(self, region: str, path: str) -> Any:
        return self.client.delete(self.url(region, path), headers=self.headers(region))

    def wait_for(
        self, region: str, path: str, done: Callable[[Any], bool], timeout: float = 120.0
    ) -> Any:
        """Poll GET `path` until `done(json)` holds; return the last body."""
        body = None
        for pause in pauses(timeout):
            body = self.get(region, path).json()
            if done(body):
                return body
            time.sleep(pause)
        raise AssertionError(f"timed out waiting on {path}: {body}")


def password_body(user: str, password: str, scope: dict[str, object]) -> dict[str, object]:
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"name": "Default"}, "password": password}
                },
            },
            "scope": scope,
        }
    }


def issue(client: TestClient, user: str, password: str, project_id: str) -> str:
    """A password token for `user`, scoped to `project_id`."""
    body = password_body(user, password, {"project": {"id": project_id}})
    response = client.post("/identity/v3/auth/tokens", json=body)
    assert response.status_code == 201, response.text
    return str(response.headers["X-Subject-Token"])


def outsider(env: Env) -> tuple[str, str]:
    """A project of another tenant's user in region2: (project id, that user's token)."""
    project = identity.create_project(env.db, env.settings, "outsider", "region2")
    identity.create_user(env.db, env.settings, "stranger", PASSWORD)
    identity.grant_role(env.db, "stranger", "outsider", "admin")
    return project.id, issue(env.client, "stranger", PASSWORD, project.id)


@dataclass
class Tenant:
    """Another project's caller: its own token, its own requests (tenant isolation tests)."""

    env: Env
    project_id: str
    token: str
    name: str = ""  # the project's name (its protectable root's key in `env.roots`)

    def url(self, path: str) -> str:
        return f"/v3/{self.project_id}{path}"

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.env.client.get(self.url(path), headers=self._auth(), **kwargs)

    def post(self, path: str, body: Any) -> Any:
        return self.env.client.post(self.url(path), json=body, headers=self._auth())

    def put(self, path: str, body: Any) -> Any:
        return self.env.client.put(self.url(path), json=body, headers=self._auth())

    def delete(self, path: str) -> Any:
        return self.env.client.delete(self.url(path), headers=self._auth())

    def _auth(self) -> dict[str, str]:
        return {"X-Auth-Token": self.token}


def neighbour(env: Env, name: str = "partner", region: str = "region1") -> Tenant:
    """Project `name` in `region`, administered by a user of its own (named after it): a
    tenant that shares the region with the admin's project. Its protectable root exists
    when the settings were made with `make_settings(..., extra_projects=(name,))`."""
    project = identity.create_project(env.db, env.settings, name, region)
    identity.create_user(env.db, env.settings, f"{name}-admin", PASSWORD)
    identity.grant_role(env.db, f"{name}-admin", name, "admin")
    token = issue(env.client, f"{name}-admin", PASSWORD, project.id)
    return Tenant(env, project.id, token, name)


def make_settings(
    tmp_path: Path, extra_projects: tuple[str, ...] = (), **overrides: Any
) -> Settings:
    """Settings with a protectable root per region's project (named after the region) and
    per name of `extra_projects` (projects a test creates, e.g. with `neighbour`)."""
    roots = [
        ProtectableRoot(project=name, path=tmp_path / "roots" / name)
        for name in ("region1", "region2", *extra_projects)
    ]
    for root in roots:
        root.path.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "protectable_roots": roots,
        "reconcile_interval_seconds": 0.5,
        "lease_seconds": 5.0,
        "gc_safety_margin_seconds": 0.0,
        # Real argon2id at its cheapest: production strength is tested in test_identity.py.
        "password_hash_cost": "test",
    }
    return Settings(**{**values, **overrides})


# The users every app under test has besides the bootstrapped admin: name -> role.
USERS = {"viewer": "viewer", "member": "member"}


@contextmanager
def serving(settings: Settings, database: Database) -> Iterator[Env]:
    """The app on `settings` and `database`, with the admin bootstrapped in every region
    and USERS granted their role there; the worker runs until the block ends."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _prepare_queue(settings)
    projects = _identity(settings, database)
    app = create_app(settings, database, migrate=False)
    with TestClient(app) as client:
        roots = {root.project: root.path for root in settings.protectable_roots}
        yield Env(client, settings, database, projects, roots)


def _prepare_queue(settings: Settings) -> None:
    """Give a new SQLite queue file Huey's tables, copied: Huey creates them in one
    transaction, a write and an fsync that took ~30 ms of each test on a busy disk."""
    queue_file = sqlite_file(settings.queue)
    if queue_file is not None and not queue_file.exists():
        shutil.copyfile(_queue_template(), queue_file)


@functools.cache
def _queue_template() -> Path:
    """A SQLite queue file as Huey creates it (removed when the test run ends)."""
    folder = tempfile.TemporaryDirectory(prefix="opencbr-queue-")
    atexit.register(folder.cleanup)
    path = Path(folder.name) / "queue.db"
    open_huey(f"sqlite:///{path}").storage.close()
    return path


@dataclass(frozen=True)
class _Identity:
    """What `_bootstrap` wrote into an empty database: the region -> project ids, and the
    rows of each table it wrote to (parents first)."""

    projects: dict[str, str]
    rows: list[tuple[Table, list[dict[str, Any]]]]


# One per backend and settings shape (region names, password hash cost). The bootstrap's
# dozen transactions were ~50 ms of every API test's setup (several times that on a busy
# machine); inserting the rows it wrote is one transaction. The first app of each shape
# bootstraps for real.
_IDENTITIES: dict[tuple[str, tuple[str, ...], str], _Identity] = {}


def _identity(settings: Settings, database: Database) -> dict[str, str]:
    """Bootstrap the identity of `serving` into the empty `database`: region -> project id."""
    shape = (
        database.engine.dialect.name,
        tuple(region.name for region in settings.regions),
        settings.password_hash_cost,
    )
    known = _IDENTITIES.get(shape)
    if known is None:
        projects = _bootstrap(settings, database)
        _IDENTITIES[shape] = _Identity(projects, _identity_rows(database))
        return projects
    with database.engine.begin() as connection:
        for table, table_rows in known.rows:
            connection.execute(table.insert(), table_rows)
    return dict(known.projects)


def _identity_rows(database: Database) -> list[tuple[Table, list[dict[str, Any]]]]:
    with database.engine.connect() as connection:
        tables = [
            (table, [dict(row._mapping) for row in connection.execute(table.select())])
            for table in Base.metadata.sorted_tables
        ]
    return [(table, rows) for table, rows in tables if rows]


def _bootstrap(settings: Settings, database: Database) -> dict[str, str]:
    result = identity.bootstrap(database, settings, "admin", PASSWORD)
    for name, role in USERS.items():
        identity.create_user(database, settings, name, PASSWORD)
        for project in result.projects.values():
            identity.grant_role(database, name, project, role)
    return result.projects


# --- bodies and resources -------------------------------------------------------------


def vault_body(
    name: str = "vault-1",
    object_type: str = "turbo",
    protect_type: str = "backup",
    size: int = 100,
    resources: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "vault": {
            "name": name,
            "billing": {
                "consistent_level": "crash_consistent",
                "object_type": object_type,
                "protect_type": protect_type,
                "size": size,
            },
            "resources": resources or [],
            **extra,
        }
    }


def create_vault(env: Env, region: str = "region1", **kwargs: Any) -> dict[str, Any]:
    response = env.post(region, "/vaults", vault_body(**kwargs))
    assert response.status_code == 200, response.text
    vault: dict[str, Any] = response.json()["vault"]
    return vault


def register_dir(
    env: Env, region: str = "region1", name: str = "data", subdir: str | None = None
) -> dict[str, Any]:
    path = env.roots[region] / (subdir or name)
    path.mkdir(parents=True, exist_ok=True)
    response = env.post(
        region, "/protectables/turbo/instances", {"instance": {"name": name, "path": str(path)}}
    )
    assert response.status_code == 200, response.text
    instance: dict[str, Any] = response.json()["instance"]
    return instance


def register_disk(
    env: Env, region: str = "region1", name: str = "disk", size: int = 1 << 20
) -> dict[str, Any]:
    path: Path = env.roots[region] / f"{name}.img"
    with open(path, "wb") as image:
        image.truncate(size)
    response = env.post(
        region, "/protectables/disk/instances", {"instance": {"name": name, "path": str(path)}}
    )
    assert response.status_code == 200, response.text
    instance: dict[str, Any] = response.json()["instance"]
    return instance


def register_server(
    env: Env, volumes: dict[str, Path], name: str = "web", region: str = "region1"
) -> dict[str, Any]:
    """A server `name` whose volumes (name -> directory or disk image) exist already."""
    body = {
        "instance": {
            "name": name,
            "volumes": [{"name": vol, "path": str(path)} for vol, path in volumes.items()],
        }
    }
    response = env.post(region, "/protectables/server/instances", body)
    assert response.status_code == 200, response.text
    server: dict[str, Any] = response.json()["instance"]
    return server


def register_web_server(env: Env, image: bytes) -> dict[str, Any]:
    """A server `web` under region1's root: a directory volume `sys` holding one config
    file and a disk volume `data` whose image holds `image`."""
    web = env.roots["region1"] / "web"
    (web / "sys").mkdir(parents=True)
    (web / "sys" / "etc.conf").write_text("port=80\n")
    (web / "data.img").write_bytes(image)
    return register_server(env, {"sys": web / "sys", "data": web / "data.img"})


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    assert body["error_msg"]


def chunks_dir(env: Env, region: str, vault_id: str) -> Path:
    """The chunk folder of a vault's local store."""
    region_storage = str(env.settings.data_dir / "store" / region)
    return Path(layout.vault_location(region_storage, vault_id)) / layout.CHUNKS_FOLDER


def chunk_keys(env: Env) -> Keyring:
    """The app's keyring: what opens the sealed chunks and manifests its vaults hold."""
    keys: Keyring = env.client.app.state.runtime.keys  # type: ignore[attr-defined]
    return keys


def largest_chunk(env: Env, region: str, vault_id: str) -> Path:
    """The biggest chunk file of a vault: a data chunk of the largest file backed up."""
    files = (p for p in chunks_dir(env, region, vault_id).rglob("*") if p.is_file())
    return max(files, key=lambda p: p.stat().st_size)


def flip_byte(chunk: Path) -> None:
    """Damage a stored chunk the way a failing disk would: one byte in its middle flipped."""
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


def chunk_intact(env: Env, chunk: Path) -> bool:
    """Whether a stored chunk file still opens and verifies."""
    try:
        decode_chunk(chunk.read_bytes(), chunk.name, chunk_keys(env))
    except CorruptChunkError:
        return False
    return True


def verify_vault(
    env: Env, region: str, vault_id: str, sample_percent: int = 100, repair: bool = False
) -> dict[str, Any]:
    """Run a verify and follow its log to the end; the log's `verify` block."""
    body = {"verify": {"sample_percent": sample_percent, "repair": repair}}
    response = env.post(region, f"/vaults/{vault_id}/verify", body)
    assert response.status_code == 202, response.text
    started = response.json()["verify"]
    assert response.headers["X-Opencbr-Operation-Log"] == started["operation_log_id"]
    log: dict[str, Any] = env.wait_for(
        region,
        f"/operation-logs/{started['operation_log_id']}",
        lambda b: b["operation_log"]["status"] in ("success", "failed"),
    )["operation_log"]
    assert log["status"] == "success", log
    assert log["operation_type"] == "verify" and log["vault_id"] == vault_id
    assert log["extra_info"]["common"]["progress"] == 100
    block: dict[str, Any] = log["extra_info"]["verify"]
    return block


def read_manifest(env: Env, path: Path) -> Manifest:
    """A manifest file of a vault's local store, opened (manifests are sealed in encrypted
    vaults)."""
    return Manifest.from_bytes(open_manifest(path.read_bytes(), path.name, chunk_keys(env)))


def plain_runs(root: Path, run: int) -> set[bytes]:
    """Every `run`-byte run of every file under `root`, at every offset."""
    runs: set[bytes] = set()
    for path in (p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        runs.update(data[i : i + run] for i in range(len(data) - run + 1))
    return runs


def leaks(stored: bytes, marker: bytes, runs: set[bytes], run: int) -> bool:
    """Whether stored bytes hold `marker` or any of the plain `runs` (encryption tests)."""
    return marker in stored or any(
        stored[i : i + run] in runs for i in range(len(stored) - run + 1)
    )


def chunk_names(env: Env, region: str, vault_id: str) -> set[str]:
    """The digests of the chunk files in a vault's local store."""
    return {p.name for p in chunks_dir(env, region, vault_id).rglob("*") if p.is_file()}


# --- backups and restores -------------------------------------------------------------


def backup_now(
    env: Env, vault_id: str, region: str = "region1", expect: str = "available", **params: Any
) -> dict[str, Any]:
    """Create a checkpoint and wait for it to end `expect`; returns the (single) backup."""
    response = env.post(
        region, "/checkpoints", {"checkpoint": {"vault_id": vault_id, "parameters": params}}
    )
    assert response.status_code == 200, response.text
    checkpoint = response.json()["checkpoint"]
    assert checkpoint["status"] == "protecting"
    done = env.wait_for(
        region,
        f"/checkpoints/{checkpoint['id']}",
        lambda body: body["checkpoint"]["status"] != "protecting",
    )
    assert done["checkpoint"]["status"] == expect, done
    backups = env.get(region, "/backups", params={"checkpoint_id": checkpoint["id"]}).json()[
        "backups"
    ]
    assert len(backups) == 1
    backup: dict[str, Any] = backups[0]
    return backup


def restore(
    env: Env, backup_id: str, body: dict[str, Any], region: str = "region1"
) -> dict[str, Any]:
    """Start a restore and follow the operation log its answer names (CBR's 202 has no
    body; opencbr's `X-Opencbr-Operation-Log` header names the log) until it ends."""
    response = env.post(region, f"/backups/{backup_id}/restore", {"restore": body})
    assert response.status_code == 202, response.text
    assert response.content == b""
    log_id = response.headers["X-Opencbr-Operation-Log"]
    log: dict[str, Any] = env.wait_for(
        region,
        f"/operation-logs/{log_id}",
        lambda b: b["operation_log"]["status"] in ("success", "failed"),
    )["operation_log"]
    assert log["operation_type"] == "restore"
    assert log["extra_info"]["restore"]["backup_id"] == backup_id
    return log


# --- replication ----------------------------------------------------------------------


def records(env: Env, vault_id: str) -> list[dict[str, Any]]:
    body = env.get(
        "region1", "/backups", params={"vault_id": vault_id, "show_replication": "true"}
    ).json()
    return [r for b in body["backups"] for r in b["replication_records"]]


def wait_records(env: Env, vault_id: str, count: int) -> list[dict[str, Any]]:
    """Poll the source backups' replication records until `count` of them have ended."""
    for pause in pauses(180, longest=0.2):
        found = records(env, vault_id)
        if sum(1 for r in found if r["status"] in ("success", "fail")) >= count:
            return found
        time.sleep(pause)
    raise AssertionError(f"replication did not finish: {records(env, vault_id)}")


def replicate_backup(env: Env, vault_id: str, backup_id: str, dest_id: str) -> dict[str, Any]:
    """Replicate one backup of `vault_id` into region2's `dest_id`; its ended record."""
    body = {
        "replicate": {
            "destination_project_id": env.projects["region2"],
            "destination_region": "region2",
            "destination_vault_id": dest_id,
        }
    }
    assert env.post("region1", f"/backups/{backup_id}/replicate", body).status_code == 200
    ended = wait_records(env, vault_id, 1)
    return next(r for r in ended if r["source_backup_id"] == backup_id)


# --- policies -------------------------------------------------------------------------

DAILY_AT_SIX = "FREQ=DAILY;INTERVAL=1;BYHOUR=6;BYMINUTE=00"
# Every field of the SDK's PolicyoODCreate a backup policy takes, each set.
FULL_DEFINITION = {
    "max_backups": 10,
    "retention_duration_days": 30,
    "day_backups": 7,
    "week_backups": 4,
    "month_backups": 12,
    "year_backups": 2,
    "timezone": "UTC+08:00",
    "full_backup_interval": 5,
    "enable_acceleration": False,
    "advanced_retention_rules": {
        "weekly_retention_rules": {"days_of_week": ["MO", "FR"], "retention_duration_periods": 4},
        "monthly_retention_rules": {
            "retention_type": "Monthly",
            "days_of_month": [1, -1],
            "retention_duration_periods": 12,
        },
        "yearly_retention_rules": {
            "retention_type": "Weekly",
            "retention_months": ["1"],
            "retention_weeks": ["1"],
            "days_of_week": ["SU"],
            "retention_duration_periods": 3,
        },
    },
}


def policy_body(
    name: str = "daily",
    operation_type: str = "backup",
    patterns: list[str] | None = None,
    definition: dict[str, Any] | None = None,
    window: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A policy create body (`window`: the trigger's start_window_minutes); a replication
    policy needs `definition=replication_definition(env)`."""
    properties: dict[str, Any] = {"pattern": [DAILY_AT_SIX] if patterns is None else patterns}
    if window is not None:
        properties["start_window_minutes"] = window
    return {
        "policy": {
            "name": name,
            "operation_type": operation_type,
            "operation_definition": definition if definition is not None else {"max_backups": 7},
            "trigger": {"properties": properties},
            **extra,
        }
    }


def replication_definition(env: Env, **extra: Any) -> dict[str, Any]:
    return {
        "destination_region": "region2",
        "destination_project_id": env.projects["region2"],
        "max_backups": 7,
        **extra,
    }


def create_policy(env: Env, region: str = "region1", **kwargs: Any) -> dict[str, Any]:
    response = env.post(region, "/policies", policy_body(**kwargs))
    assert response.status_code == 200, response.text
    policy: dict[str, Any] = response.json()["policy"]
    return policy


def associate(
    env: Env, vault_id: str, policy_id: str, destination_vault_id: str | None = None
) -> Any:
    body: dict[str, Any] = {"policy_id": policy_id}
    if destination_vault_id is not None:
        body["destination_vault_id"] = destination_vault_id
    return env.post("region1", f"/vaults/{vault_id}/associatepolicy", body)


# --- AK/SK keys and SDK signing -------------------------------------------------------


CREDENTIALS = "/v3.0/OS-CREDENTIAL/credentials"
HOST = "testserver"  # what Starlette's TestClient sends as Host


@dataclass(frozen=True)
class Key:
    access: str
    secret: str


@dataclass(frozen=True)
class Signed:
    """A signed request as it goes on the wire."""

    method: str
    url: str  # path and query, percent-encoded
    headers: dict[str, str]
    body: bytes


def sdk_date(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def sign(
    key: Key,
    method: str,
    path: str,
    project_id: str | None,
    query: list[tuple[str, Any]] | None = None,
    body: Any = None,
    date: str | None = None,
    extra: dict[str, str] | None = None,
) -> Signed:
    data = json.dumps(body) if body is not None else None
    headers = {
        "Content-Type": "application/json;charset=utf-8" if data else "application/json",
        "User-Agent": "huaweicloud-usdk-python/3.0",
        "X-Sdk-Date": date or sdk_date(),
        **({"X-Project-Id": project_id} if project_id else {}),
        **(extra or {}),
    }
    request = SdkRequest(
        method=method,
        schema="http",
        host=HOST,
        resource_path=path,
        query_params=query or [],
        header_params=headers,
        body=data,
    )
    Signer(BasicCredentials(key.access, key.secret, project_id)).sign(request)
    prepared = requests.Request(
        method, request.url, headers=request.header_params, data=request.body
    ).prepare()
    sent = prepared.body or b""
    assert isinstance(sent, bytes)
    return Signed(method, prepared.path_url, dict(prepared.headers), sent)


def send(env: Env, signed: Signed) -> Any:
    return env.client.request(
        signed.method, signed.url, headers=signed.headers, content=signed.body
    )


def create_key(env: Env, user_id: str | None = None, user: str = "admin") -> Key:
    body = {"credential": {"user_id": user_id, "description": "ci"} if user_id else {}}
    response = env.client.post(CREDENTIALS, json=body, headers=env.headers("region1", user))
    assert response.status_code == 201, response.text
    credential = response.json()["credential"]
    return Key(credential["access"], credential["secret"])


def user_id(env: Env, name: str) -> str:
    with env.db.transaction() as session:
        user = identity.find_user(session, name)
        assert user is not None
        return user.id
