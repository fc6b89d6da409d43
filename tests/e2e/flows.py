"""What the end-to-end tests share: a real `opencbr serve` process (`Server`), its config,
tokens, HTTP flows (`Client`) and the official SDKs' helpers (`Site`).

Test modules import from here, never from one another; fixtures live in conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openstack
from huaweicloudsdkcbr.v1 import (  # type: ignore[import-untyped]
    BillingCreate,
    CheckpointParam,
    CreateCheckpointRequest,
    CreateVaultRequest,
    ListBackupsRequest,
    ResourceCreate,
    ShowBackupRequest,
    ShowCheckpointRequest,
    VaultBackup,
    VaultBackupReq,
    VaultCreate,
    VaultCreateReq,
)
from huaweicloudsdkcore.auth.credentials import BasicCredentials  # type: ignore[import-untyped]
from otcextensions import sdk as otc_sdk
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.e2e.sdk_required import CheckedCbrClient
from tests.polling import pauses

T = TypeVar("T")
OPENCBR = [sys.executable, "-m", "opencbr"]
TURBO = "OS::Sfs::Turbo"
# Fields the SDK models mark as always present (cbr-sdk-models.md), checked on every answer.
VAULT_FIELDS = ("billing", "id", "name", "project_id", "provider_id", "resources", "user_id")
VAULT_FIELDS += ("created_at", "auto_bind", "auto_expand", "smn_notify", "threshold")
BILLING_FIELDS = ("allocated", "charging_mode", "cloud_type", "consistent_level", "object_type")
BILLING_FIELDS += ("protect_type", "size", "spec_code", "status", "used")
CHECKPOINT_FIELDS = ("created_at", "id", "project_id", "status", "vault", "extra_info")
BACKUP_FIELDS = ("checkpoint_id", "created_at", "description", "extend_info", "id", "image_type")
BACKUP_FIELDS += ("name", "project_id", "protected_at", "resource_id", "resource_name")
BACKUP_FIELDS += ("resource_size", "resource_type", "status", "updated_at", "vault_id")
BACKUP_FIELDS += ("provider_id",)


# --- a served process -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One `opencbr serve` process; `restart()` SIGKILLs and starts it again on the same port.

    Without a `config` it runs on the built-in defaults, in `cwd`, with the `OPENCBR_*`
    variables of `env` on top of this process's environment."""

    config: Path | None
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    args: tuple[str, ...] = ()  # more `serve` options (`--no-worker`, `--port`)
    log_name: str = "serve.log"  # in data_dir: several processes may share it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.launch()
        try:
            self.wait_ready()
        except RuntimeError:
            self.stop()  # reap it: a process never waited for warns when collected
            raise

    def launch(self) -> None:
        """Start the process; `wait_ready` waits for it (start several, then wait)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = ["--config", str(self.config)] if self.config else []
        with open(self.data_dir / self.log_name, "ab") as log:
            self.process = subprocess.Popen(
                [*OPENCBR, "serve", *config, *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                cwd=self.cwd,
            )

    def wait_ready(self) -> None:
        for pause in pauses(60, first=0.05, longest=0.2):
            try:
                if httpx.get(f"{self.url}/identity/v3", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(pause)
        raise RuntimeError("opencbr serve did not come up:\n" + self.log())

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        path = self.data_dir / self.log_name
        return path.read_text(errors="replace") if path.exists() else ""

    def password(self) -> str:
        return (self.data_dir / "admin-password").read_text().strip()

    def projects(self) -> dict[str, str]:
        """Region -> id of its project, as the start-up announcement names them (`serve`
        bootstraps them on its first start); no `opencbr admin` process to start."""
        announced = re.findall(r"^  project: +(\S+) = (\S+) \(region \S+\)$", self.log(), re.M)
        assert announced, "no project in the announcement:\n" + self.log()
        return dict(announced)

    def root(self, region: str) -> Path:
        """The protectable root `write_config` gave the project named after `region`."""
        return self.data_dir.parent / "roots" / region

    def admin(self, *args: str) -> dict[str, Any]:
        config = ["--config", str(self.config)] if self.config else []
        done = subprocess.run(
            [*OPENCBR, "admin", *args, *config],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            env={**os.environ, **self.env},
            cwd=self.cwd,
        )
        result: dict[str, Any] = json.loads(done.stdout)
        return result


@dataclass
class Worker:
    """One `opencbr worker` process (no HTTP), logging to `log_path`."""

    config: Path
    log_path: Path
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*OPENCBR, "worker", "--config", str(self.config), *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        """Until it announces itself (its consumer and housekeeping run by then)."""
        deadline = time.monotonic() + 60
        while "opencbr worker:" not in self.log():
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError("opencbr worker exited:\n" + self.log())
            if time.monotonic() > deadline:
                raise RuntimeError("opencbr worker did not come up:\n" + self.log())
            time.sleep(0.1)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def write_config(tmp: Path, port: int, extra: str = "") -> Path:
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    roots = "".join(
        f'[[protectable_roots]]\nproject = "{region}"\npath = "{tmp / "roots" / region}"\n'
        for region in ("region1", "region2")
    )
    for region in ("region1", "region2"):
        (tmp / "roots" / region).mkdir(parents=True, exist_ok=True)
    if "metrics_listen" not in extra:  # the default port would collide between servers
        extra = f'metrics_listen = "127.0.0.1:{free_port()}"\n{extra}'
    config = tmp / "opencbr.toml"
    config.write_text(
        f'data_dir = "{data}"\nlisten = "127.0.0.1:{port}"\n'
        f"reconcile_interval_seconds = 1.0\n"
        # Real argon2id at its cheapest: production strength is tested in the API tests.
        'password_hash_cost = "test"\n'
        f"{extra}\n{roots}"
    )
    return config


@contextmanager
def serving(tmp: Path, extra: str = "") -> Iterator[Server]:
    """A server on a free port with `write_config(tmp, port, extra)`, stopped at the end."""
    port = free_port()
    instance = Server(write_config(tmp, port, extra), tmp / "data", port)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def token_for(
    server: Server, project_id: str, user: str = "admin", password: str | None = None
) -> str:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": user,
                        "domain": {"name": "Default"},
                        "password": password or server.password(),
                    }
                },
            },
            "scope": {"project": {"id": project_id}},
        }
    }
    response = httpx.post(f"{server.url}/identity/v3/auth/tokens", json=body, timeout=30)
    assert response.status_code == 201, response.text
    return str(response.headers["X-Subject-Token"])


def create_key(server: Server, project_id: str) -> dict[str, Any]:
    """An AK/SK of the admin, made through the API (`opencbr admin credential create`,
    tested on its own, is a process start: seconds on a busy machine)."""
    response = httpx.post(
        f"{server.url}/v3.0/OS-CREDENTIAL/credentials",
        json={"credential": {"description": "e2e"}},
        headers={"X-Auth-Token": token_for(server, project_id)},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    key: dict[str, Any] = response.json()["credential"]
    return key


# --- HTTP flows -----------------------------------------------------------------------


class Client:
    """A token-authenticated client of one project on a running server."""

    def __init__(self, server: Server, project_id: str) -> None:
        self.server = server
        self.project_id = project_id
        self.http = httpx.Client(
            base_url=f"{server.url}/v3/{project_id}",
            timeout=60,
            headers={"X-Auth-Token": token_for(server, project_id)},
        )

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = self.http.request(method, path, json=body, params=params or None)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def wait(
        self, path: str, done: Callable[[Any], bool], timeout: float = 300, **params: Any
    ) -> Any:
        for pause in pauses(timeout, longest=0.2):
            try:
                body = self.call("GET", path, **params)
                if done(body):
                    return body
            except httpx.TransportError:
                pass  # the server is restarting
            time.sleep(pause)
        raise AssertionError(f"timed out on {path}")

    def register_dir(self, name: str, path: str) -> str:
        body = {"instance": {"name": name, "path": path}}
        return str(self.call("POST", "/protectables/turbo/instances", body)["instance"]["id"])

    def vault(
        self, name: str, protect_type: str = "backup", resources: list[str] | None = None
    ) -> str:
        body = {
            "vault": {
                "name": name,
                "billing": {
                    "consistent_level": "crash_consistent",
                    "object_type": "turbo",
                    "protect_type": protect_type,
                    "size": 1000,
                },
                "resources": [{"id": r, "type": "OS::Sfs::Turbo"} for r in resources or []],
            }
        }
        return str(self.call("POST", "/vaults", body)["vault"]["id"])

    def start_backup(self, vault_id: str, name: str) -> str:
        body = {"checkpoint": {"vault_id": vault_id, "parameters": {"name": name}}}
        return str(self.call("POST", "/checkpoints", body)["checkpoint"]["id"])

    def finished_backup(self, checkpoint_id: str) -> dict[str, Any]:
        self.wait(
            f"/checkpoints/{checkpoint_id}", lambda b: b["checkpoint"]["status"] != "protecting"
        )
        backups = self.call("GET", "/backups", checkpoint_id=checkpoint_id)["backups"]
        assert len(backups) == 1
        backup: dict[str, Any] = backups[0]
        return backup

    def restore(self, backup_id: str, resource_id: str) -> dict[str, Any]:
        self.call(
            "POST", f"/backups/{backup_id}/restore", {"restore": {"resource_id": resource_id}}
        )

        def ended(body: Any) -> bool:
            return any(
                log["extra_info"].get("restore", {}).get("backup_id") == backup_id
                and log["status"] in ("success", "failed")
                for log in body["operation_logs"]
            )

        logs = self.wait("/operation-logs", ended, operation_type="restore")["operation_logs"]
        log: dict[str, Any] = next(
            x for x in logs if x["extra_info"]["restore"]["backup_id"] == backup_id
        )
        return log


# --- Prometheus metrics of a process ------------------------------------------------------

Samples = dict[str, list[Sample]]


def scrape(url: str) -> Samples:
    """The samples of a metrics listener, by name, parsed with prometheus_client's parser."""
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the one sample of `name` whose labels include `labels`."""
    found = [s.value for s in samples.get(name, []) if labels.items() <= s.labels.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def eventually(url: str, holds: Callable[[Samples], bool], timeout: float = 30) -> Samples:
    """Scrape until `holds` (state gauges are cached for a few seconds; a task's counters
    move just after its work row settles)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if holds(samples):
            return samples
        assert time.monotonic() < deadline, "metrics never reached the expected values"
        time.sleep(0.5)


# --- the official SDKs ----------------------------------------------------------------


@dataclass
class Site:
    server: Server
    projects: dict[str, str]  # region -> project id (projects are named after regions)
    access: str
    secret: str
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # run at the module's end

    def cbr(
        self,
        region: str,
        access: str | None = None,
        secret: str | None = None,
        project_id: str | None = None,
    ) -> Any:
        """A Huawei SDK client for the region's project, or for `project_id` (another project
        of the region), closed at the module's end; every answer is checked for the fields
        the SDK's models mark required (`sdk_required`)."""
        credentials = BasicCredentials(
            access or self.access, secret or self.secret, project_id or self.projects[region]
        )
        builder = CheckedCbrClient.new_builder().with_credentials(credentials)
        client = builder.with_endpoints([self.server.url]).build()
        self.cleanups.append(client.get_http_client().close)
        return client

    def close(self) -> None:
        for cleanup in self.cleanups:
            cleanup()


def admin_project(site: Site, name: str, region: str = "region1") -> str:
    """A further project `name` in `region` where the admin is admin: its id."""
    project = site.server.admin("project", "create", "--name", name, "--region", region)
    site.server.admin("role", "grant", "--user", "admin", "--project", name, "--role", "admin")
    return str(project["project"]["id"])


def wait_until(fetch: Callable[[], T], done: Callable[[T], bool], timeout: float = 60.0) -> T:
    value = None
    for pause in pauses(timeout, longest=0.2):
        value = fetch()
        if done(value):
            return value
        time.sleep(pause)
    raise AssertionError(f"timed out; last value: {value}")


def assert_populated(model: Any, fields: Iterable[str]) -> None:
    missing = [name for name in fields if getattr(model, name) is None]
    assert not missing, f"{type(model).__name__} lacks {missing}: {model}"


def write_tree(path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)


def register_dir(site: Site, region: str, name: str, files: dict[str, str]) -> str:
    """A directory under the region project's root, registered as a turbo resource."""
    path = site.server.root(region) / name
    path.mkdir(parents=True)
    write_tree(path, files)
    project = site.projects[region]
    response = httpx.post(
        f"{site.server.url}/v3/{project}/protectables/turbo/instances",
        json={"instance": {"name": name, "path": str(path)}},
        headers={"X-Auth-Token": token_for(site.server, project)},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["instance"]["id"])


def register_server(site: Site, region: str, name: str, volumes: dict[str, dict[str, str]]) -> str:
    """A server under the region project's root whose volumes are directories (volume name
    -> its files), registered as a server resource."""
    base = site.server.root(region) / name
    for volume, files in volumes.items():
        (base / volume).mkdir(parents=True)
        write_tree(base / volume, files)
    project = site.projects[region]
    body = {
        "instance": {
            "name": name,
            "volumes": [{"name": volume, "path": str(base / volume)} for volume in volumes],
        }
    }
    response = httpx.post(
        f"{site.server.url}/v3/{project}/protectables/server/instances",
        json=body,
        headers={"X-Auth-Token": token_for(site.server, project)},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["instance"]["id"])


# --- Huawei Cloud SDK (AK/SK) --------------------------------------------------------------


def sdk_vault(client: Any, name: str, protect_type: str, resources: list[str]) -> Any:
    billing = BillingCreate(
        consistent_level="crash_consistent", object_type="turbo", protect_type=protect_type, size=10
    )
    bound = [ResourceCreate(id=resource, type=TURBO) for resource in resources]
    body = VaultCreateReq(vault=VaultCreate(name=name, billing=billing, resources=bound))
    vault = client.create_vault(CreateVaultRequest(body=body)).vault
    assert_populated(vault, VAULT_FIELDS)
    assert_populated(vault.billing, BILLING_FIELDS)
    expected = "vault.replication.server.normal" if protect_type == "replication" else None
    assert vault.billing.spec_code == (expected or "vault.backup.turbo.normal")
    return vault


def sdk_back_up(client: Any, vault_id: str, name: str) -> Any:
    """Back the vault up now; return its (only) backup once available."""
    parameters = CheckpointParam(name=name, description="by the Huawei SDK", incremental=True)
    body = VaultBackupReq(checkpoint=VaultBackup(vault_id=vault_id, parameters=parameters))
    checkpoint = client.create_checkpoint(CreateCheckpointRequest(body=body)).checkpoint
    assert_populated(checkpoint, CHECKPOINT_FIELDS)
    wait_until(
        lambda: client.show_checkpoint(ShowCheckpointRequest(checkpoint_id=checkpoint.id)),
        lambda shown: shown.checkpoint.status == "available",
    )
    listed = client.list_backups(ListBackupsRequest(checkpoint_id=checkpoint.id))
    assert listed.count == 1
    backup = client.show_backup(ShowBackupRequest(backup_id=listed.backups[0].id)).backup
    assert_populated(backup, BACKUP_FIELDS)
    assert (backup.status, backup.vault_id, backup.checkpoint_id) == (
        "available",
        vault_id,
        checkpoint.id,
    )
    return backup


# --- openstacksdk + otcextensions (Keystone token) and the openstack CLI ------------------

OPENSTACK = str(Path(sys.executable).parent / "openstack")


def otc_connection(site: Site, region: str, project_id: str | None = None) -> Any:
    """An openstacksdk connection with otcextensions as the admin, in the region's project
    or in `project_id` (another project of the region the admin has a role in)."""
    conn = openstack.connect(
        auth_url=f"{site.server.url}/identity/v3",
        username="admin",
        password=site.server.password(),
        project_id=project_id or site.projects[region],
        user_domain_name="Default",
        region_name=region,
    )
    otc_sdk.register_otc_extensions(conn)
    site.cleanups.append(conn.close)
    return conn


def otc_vault(conn: Any, name: str, protect_type: str = "backup") -> Any:
    billing = {
        "consistent_level": "crash_consistent",
        "object_type": "turbo",
        "protect_type": protect_type,
        "size": 10,
    }
    return conn.cbr.create_vault(name=name, billing=billing, resources=[])


def openstack_environment(site: Site, workdir: Path, region: str) -> dict[str, str]:
    """This process's environment without its OS_* variables, pointing the `openstack`
    CLI at a clouds.yaml in `workdir` whose cloud `opencbr` is the admin of `region`'s
    project."""
    clouds = workdir / "clouds.yaml"
    clouds.write_text(
        "clouds:\n"
        "  opencbr:\n"
        "    auth:\n"
        f"      auth_url: {site.server.url}/identity/v3\n"
        "      username: admin\n"
        f"      password: {site.server.password()}\n"
        "      user_domain_name: Default\n"
        f"      project_name: {region}\n"
        "      project_domain_name: Default\n"
        f"    region_name: {region}\n"
        "    identity_api_version: 3\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    environment["OS_CLIENT_CONFIG_FILE"] = str(clouds)
    return environment


def openstack_cli(site: Site, workdir: Path, region: str, *args: str) -> Any:
    """Run `openstack <args>` as the admin of `region`'s project, configured by a
    clouds.yaml in `workdir` (no OS_* variable of the caller's environment leaks in)."""
    return subprocess.run(
        [OPENSTACK, "--os-cloud", "opencbr", *args],
        env=openstack_environment(site, workdir, region),
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextmanager
def openstack_batch(
    site: Site, workdir: Path, region: str
) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """A function running `openstack <args>` as `openstack_cli` does, for many commands:
    one `openstack_batch.py` process forks the console script's `main` per command
    instead of paying the CLI's start-up (seconds) for each."""
    warm_up = ["--os-cloud", "opencbr", "cbr", "task", "list", "-f", "value"]
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("openstack_batch.py")), *warm_up],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=openstack_environment(site, workdir, region),
    )
    assert process.stdin is not None and process.stdout is not None
    requests, answers = process.stdin, process.stdout

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = ["--os-cloud", "opencbr", *args]
        requests.write(json.dumps(argv) + "\n")
        requests.flush()
        answer = json.loads(answers.readline())
        return subprocess.CompletedProcess(
            [OPENSTACK, *argv], answer["returncode"], answer["stdout"], answer["stderr"]
        )

    try:
        yield run
    finally:
        requests.close()
        process.wait(timeout=30)
        answers.close()
