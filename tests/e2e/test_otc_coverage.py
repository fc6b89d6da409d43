"""Every method of otcextensions' CBR proxy and every `openstack cbr` command, unmodified,
against one real `opencbr serve` (issue 16). The methods and commands are enumerated from
the installed client, so a newer otcextensions fails here until its additions are in the
tables. Each one either works (the resource with its fields, the command's `-f json`
output), or is refused with its CBR error, or fails in the client itself: exactly the
failure the table names."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from openstack import exceptions as os_exceptions
from otcextensions.sdk.cbr.v3._proxy import Proxy

from tests.e2e.flows import (
    TURBO,
    Site,
    assert_populated,
    openstack_batch,
    otc_connection,
    register_dir,
    wait_until,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack"),
]

WORKS, CLIENT_BUG, TESTED_ELSEWHERE = "works", "client bug", "tested elsewhere"

# Backup sharing needs a second project and its own setup: its five methods are driven
# through otcextensions by tests/e2e/test_sdk_members.py (test_members_through_otcextensions).
SHARING = "works; driven by tests/e2e/test_sdk_members.py::test_members_through_otcextensions"

PROXY_TABLE: dict[str, tuple[str, str]] = {
    "backups": (WORKS, "every filter CBR documents; keyset paging under every sort"),
    "get_backup": (WORKS, ""),
    "find_backup": (WORKS, "by name or id"),
    "delete_backup": (WORKS, "asynchronous, as in CBR"),
    "get_checkpoint": (WORKS, "vault.resources with backup_count and backup_size"),
    "create_checkpoint": (WORKS, ""),
    "wait_for_checkpoint": (
        WORKS,
        "given the Checkpoint; given its id, as the docstring allows, openstacksdk's "
        "wait_for_status fails in the client (AttributeError), before any request",
    ),
    "policies": (WORKS, "filters operation_type and vault_id"),
    "get_policy": (WORKS, ""),
    "find_policy": (WORKS, "by name or id"),
    "create_policy": (WORKS, ""),
    "update_policy": (WORKS, ""),
    "delete_policy": (WORKS, ""),
    "restore_data": (WORKS, "into the backed-up resource or another registered one"),
    "vaults": (WORKS, "every filter CBR documents"),
    "get_vault": (WORKS, ""),
    "find_vault": (WORKS, "by name or id"),
    "create_vault": (WORKS, ""),
    "update_vault": (WORKS, ""),
    "delete_vault": (WORKS, ""),
    "bind_policy": (
        WORKS,
        "returns the raw response, never raises; a replication policy cannot bind "
        "(otcextensions never sends destination_vault_id): 400 BackupService.9900",
    ),
    "unbind_policy": (WORKS, "returns the raw response, never raises"),
    "associate_resources": (WORKS, "returns the raw response, never raises"),
    "dissociate_resources": (WORKS, "returns the raw response, never raises"),
    "members": (TESTED_ELSEWHERE, SHARING),
    "get_member": (TESTED_ELSEWHERE, SHARING),
    "add_members": (TESTED_ELSEWHERE, SHARING),
    "update_member": (TESTED_ELSEWHERE, SHARING),
    "delete_member": (TESTED_ELSEWHERE, SHARING),
    "tasks": (
        WORKS,
        "operation logs, with the filters of the operation-log list (vault_id, "
        "operation_type, ...), which otcextensions' Task does not name but sends",
    ),
    "get_task": (WORKS, ""),
}

FIND_POLICY_BUG = "Proxy.find_policy() got an unexpected keyword argument 'policy_id'"
COMMAND_TABLE: dict[str, tuple[str, str]] = {
    "cbr_backup_delete": (WORKS, ""),
    "cbr_backup_list": (
        WORKS,
        "--resource-type fails in the client (`Proxy._list() got multiple values for "
        "argument 'resource_type'`); --member-status offers accept/reject, which CBR "
        "refuses (400 BackupService.9900: its values are accepted/rejected)",
    ),
    "cbr_backup_restore": (WORKS, "prints nothing; the restore's task reports it"),
    "cbr_backup_show": (WORKS, "by name or id"),
    "cbr_checkpoint_create": (WORKS, "--no-incremental reads every byte again"),
    "cbr_checkpoint_show": (WORKS, ""),
    "cbr_policy_create": (WORKS, ""),
    "cbr_policy_delete": (CLIENT_BUG, FIND_POLICY_BUG + ", before any request"),
    "cbr_policy_list": (WORKS, ""),
    "cbr_policy_show": (CLIENT_BUG, FIND_POLICY_BUG + ", before any request"),
    "cbr_policy_update": (CLIENT_BUG, FIND_POLICY_BUG + ", before any request"),
    "cbr_task_list": (WORKS, "operation logs"),
    "cbr_task_show": (WORKS, ""),
    "cbr_vault_associate": (WORKS, ""),
    "cbr_vault_bind": (WORKS, "backup policies (replication needs destination_vault_id)"),
    "cbr_vault_create": (WORKS, "--tag, --bind-rule, --auto-bind, --resource kept"),
    "cbr_vault_delete": (WORKS, ""),
    "cbr_vault_dissociate": (WORKS, ""),
    "cbr_vault_list": (WORKS, "every filter of the command"),
    "cbr_vault_show": (WORKS, "by name or id"),
    "cbr_vault_unbind": (WORKS, ""),
    "cbr_vault_update": (WORKS, ""),
}

# Fields opencbr always answers, as otcextensions' resources name them.
VAULT_FIELDS = ("id", "name", "billing", "created_at", "project_id", "provider_id")
VAULT_FIELDS += ("resources", "user_id", "auto_bind", "auto_expand", "tags", "bind_rules")
BILLING_FIELDS = ("allocated", "charging_mode", "cloud_type", "consistent_level")
BILLING_FIELDS += ("object_type", "protect_type", "size", "spec_code", "status", "used")
VAULT_RESOURCE_FIELDS = ("backup_count", "backup_size", "id", "name", "protect_status")
VAULT_RESOURCE_FIELDS += ("size", "type")
CHECKPOINT_FIELDS = ("created_at", "extra_info", "id", "project_id", "status", "vault")
CHECKPOINT_RESOURCE_FIELDS = ("backup_count", "backup_size", "id", "name", "protect_status")
CHECKPOINT_RESOURCE_FIELDS += ("resource_size", "type")
BACKUP_FIELDS = ("checkpoint_id", "children", "created_at", "description", "extend_info")
BACKUP_FIELDS += ("id", "image_type", "name", "project_id", "protected_at", "provider_id")
BACKUP_FIELDS += ("resource_az", "resource_id", "resource_name", "resource_size")
BACKUP_FIELDS += ("resource_type", "status", "updated_at", "vault_id")
EXTEND_FIELDS = ("auto_trigger", "bootable", "encrypted", "incremental")
EXTEND_FIELDS += ("supported_restore_mode", "system_disk")
POLICY_FIELDS = ("associated_vaults", "enabled", "id", "name", "operation_definition")
POLICY_FIELDS += ("operation_type", "trigger")
TASK_FIELDS = ("created_at", "ended_at", "error_info", "extra_info", "id", "operation_type")
TASK_FIELDS += ("project_id", "provider_id", "started_at", "status", "updated_at", "vault_id")
TASK_FIELDS += ("vault_name",)

DAILY = "FREQ=DAILY;INTERVAL=1;BYHOUR=6;BYMINUTE=00"
FILES = {"a.txt": "alpha\n", "sub/b.txt": "beta\n" * 100}


def proxy_methods() -> set[str]:
    """The public methods the CBR proxy class itself defines (openstacksdk's are not CBR's)."""
    return {name for name, value in vars(Proxy).items() if callable(value) and name[0] != "_"}


def cbr_commands() -> set[str]:
    return {entry.name for entry in entry_points(group="openstack.cbr.v3")}


def test_the_tables_name_every_proxy_method_and_every_command() -> None:
    assert set(PROXY_TABLE) == proxy_methods()
    assert set(COMMAND_TABLE) == cbr_commands()
    assert len(PROXY_TABLE) == 31


def to_test(table: dict[str, tuple[str, str]]) -> set[str]:
    return {name for name, (verdict, _) in table.items() if verdict != TESTED_ELSEWHERE}


def cbr_error(exc: os_exceptions.HttpException) -> tuple[int, str]:
    assert exc.response is not None
    return exc.response.status_code, exc.response.json()["error_code"]


class Recorded:
    """The CBR proxy, noting the name of every method the test calls on it."""

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy
        self.called: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.called.add(name)
        return getattr(self.proxy, name)


def finished_tasks(cbr: Any, vault_id: str, kind: str) -> list[Any]:
    return wait_until(
        lambda: [t for t in cbr.tasks() if (t.vault_id, t.operation_type) == (vault_id, kind)],
        lambda found: bool(found) and all(t.status in ("success", "failed") for t in found),
    )


def read_tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in path.rglob("*") if p.is_file()}


def test_every_proxy_method(site: Site) -> None:
    conn = otc_connection(site, "region1")
    cbr = Recorded(conn.cbr)
    resource = register_dir(site, "region1", "otc-cov", FILES)

    vault = cbr.create_vault(
        name="otc-cov",
        description="coverage",
        billing={
            "consistent_level": "crash_consistent",
            "object_type": "turbo",
            "protect_type": "backup",
            "size": 10,
        },
        resources=[],
    )
    assert_populated(vault, VAULT_FIELDS)
    assert_populated(vault.billing, BILLING_FIELDS)
    assert (vault.name, vault.description, vault.billing.size) == ("otc-cov", "coverage", 10)
    added = cbr.associate_resources(vault, [{"id": resource, "type": TURBO}])
    assert added.json() == {"add_resource_ids": [resource]}
    assert cbr.find_vault("otc-cov").id == cbr.find_vault(vault.id).id == vault.id
    shown = cbr.get_vault(vault.id)
    assert_populated(shown, VAULT_FIELDS)
    (bound,) = shown.resources
    assert_populated(bound, VAULT_RESOURCE_FIELDS)
    assert (bound.id, bound.type, bound.protect_status) == (resource, TURBO, "available")
    updated = cbr.update_vault(shown, name="otc-cov-main", auto_expand=True)
    assert (updated.name, updated.auto_expand) == ("otc-cov-main", True)
    assert [v.id for v in cbr.vaults(name="otc-cov-main", object_type="turbo")] == [vault.id]

    checkpoint = cbr.create_checkpoint(
        vault_id=vault.id, parameters={"name": "otc-cov-backup", "description": "by proxy"}
    )
    assert_populated(checkpoint, CHECKPOINT_FIELDS)
    with pytest.raises(AttributeError, match="'str' object has no attribute 'status'"):
        cbr.wait_for_checkpoint(checkpoint.id, interval=0.2, wait=60)
    done = cbr.wait_for_checkpoint(checkpoint, interval=0.2, wait=60)
    assert done.status == "available"
    shown_checkpoint = cbr.get_checkpoint(checkpoint.id)
    assert_populated(shown_checkpoint, CHECKPOINT_FIELDS)
    assert (shown_checkpoint.vault.id, shown_checkpoint.extra_info.name) == (
        vault.id,
        "otc-cov-backup",
    )
    (item,) = shown_checkpoint.vault.resources
    assert_populated(item, CHECKPOINT_RESOURCE_FIELDS)
    assert (item.id, item.backup_count) == (resource, "1")

    (listed,) = list(cbr.backups(checkpoint_id=checkpoint.id))
    backup = cbr.get_backup(listed.id)
    assert_populated(backup, BACKUP_FIELDS)
    assert_populated(backup.extend_info, EXTEND_FIELDS)
    assert (backup.status, backup.vault_id, backup.resource_id) == (
        "available",
        vault.id,
        resource,
    )
    assert (backup.name, backup.description, backup.image_type) == (
        "otc-cov-backup",
        "by proxy",
        "backup",
    )
    assert backup.extend_info.supported_restore_mode == "backup"
    assert cbr.find_backup("otc-cov-backup").id == cbr.find_backup(backup.id).id == backup.id

    data = site.server.root("region1") / "otc-cov"
    (data / "a.txt").write_text("overwritten\n")
    restore = cbr.restore_data(backup, resource_id=resource)
    assert restore.resource_id == resource
    (task,) = finished_tasks(cbr, vault.id, "restore")
    assert read_tree(data) == FILES
    # Filters otcextensions' Task does not name are sent as they are; opencbr applies them.
    assert [t.id for t in cbr.tasks(vault_id=vault.id, operation_type="restore")] == [task.id]
    assert list(cbr.tasks(vault_id="no-such-vault")) == []
    shown_task = cbr.get_task(task.id)
    assert_populated(shown_task, TASK_FIELDS)
    assert (shown_task.status, shown_task.checkpoint_id) == ("success", checkpoint.id)
    assert shown_task.extra_info.restore.backup_id == backup.id

    policy = cbr.create_policy(
        name="otc-cov-policy",
        operation_type="backup",
        operation_definition={"max_backups": 3, "day_backups": 1, "timezone": "UTC+01:00"},
        trigger={"properties": {"pattern": [DAILY]}},
    )
    assert_populated(policy, POLICY_FIELDS)
    assert (policy.operation_definition.max_backups, policy.trigger.properties.pattern) == (
        3,
        [DAILY],
    )
    assert cbr.find_policy("otc-cov-policy").id == cbr.find_policy(policy.id).id == policy.id
    assert cbr.bind_policy(vault, policy).json()["associate_policy"]["policy_id"] == policy.id
    assert [p.id for p in cbr.policies(vault_id=vault.id, operation_type="backup")] == [policy.id]
    assert cbr.get_vault(vault.id).backup_policy_id == policy.id
    shown_policy = cbr.get_policy(policy.id)
    assert_populated(shown_policy, POLICY_FIELDS)
    assert [v.vault_id for v in shown_policy.associated_vaults] == [vault.id]
    renamed = cbr.update_policy(policy, name="otc-cov-weekly", enabled=False)
    assert (renamed.name, renamed.enabled, renamed.operation_definition.max_backups) == (
        "otc-cov-weekly",
        False,
        3,
    )
    assert cbr.unbind_policy(vault, policy).status_code == 200
    not_bound = cbr.unbind_policy(vault, policy)
    assert (not_bound.status_code, not_bound.json()["error_code"]) == (404, "BackupService.6002")
    cbr.delete_policy(policy, ignore_missing=False)
    with pytest.raises(os_exceptions.NotFoundException) as gone:
        cbr.get_policy(policy.id)
    assert cbr_error(gone.value) == (404, "BackupService.6000")

    removed = cbr.dissociate_resources(vault, [resource])
    assert removed.json() == {"remove_resource_ids": [resource]}
    cbr.delete_backup(backup, ignore_missing=False)
    wait_until(lambda: list(cbr.backups(vault_id=vault.id)), lambda left: not left)
    with pytest.raises(os_exceptions.NotFoundException) as deleted:
        cbr.get_backup(backup.id)
    assert cbr_error(deleted.value) == (404, "BackupService.6200")
    cbr.delete_vault(vault, ignore_missing=False)
    assert cbr.find_vault("otc-cov-main") is None
    with pytest.raises(os_exceptions.NotFoundException) as no_vault:
        cbr.get_vault(vault.id)
    assert cbr_error(no_vault.value) == (404, "BackupService.6105")
    with pytest.raises(os_exceptions.NotFoundException) as no_checkpoint:
        cbr.get_checkpoint("no-such-checkpoint")
    assert cbr_error(no_checkpoint.value) == (404, "BackupService.6217")
    with pytest.raises(os_exceptions.NotFoundException) as no_task:
        cbr.get_task("no-such-task")
    assert cbr_error(no_task.value) == (404, "BackupService.6500")

    assert cbr.called == to_test(PROXY_TABLE)


# --- the `openstack cbr` commands ---------------------------------------------------------


class Commands:
    """`openstack cbr ...` through one batch process, noting each command's entry point."""

    def __init__(self, run: Callable[..., subprocess.CompletedProcess[str]]) -> None:
        self.run = run
        self.called: set[str] = set()

    def __call__(self, noun: str, verb: str, *args: str) -> subprocess.CompletedProcess[str]:
        self.called.add(f"cbr_{noun}_{verb}")
        return self.run("cbr", noun, verb, *args)

    def json(self, noun: str, verb: str, *args: str) -> Any:
        done = self(noun, verb, *args, "-f", "json")
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        return json.loads(done.stdout)

    def quiet(self, noun: str, verb: str, *args: str) -> None:
        """A command that prints nothing when it works."""
        done = self(noun, verb, *args)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")

    def client_bug(self, message: str, noun: str, verb: str, *args: str) -> None:
        done = self(noun, verb, *args)
        assert (done.returncode, done.stdout, done.stderr.strip()) == (1, "", message)


@pytest.fixture
def commands(site: Site, tmp_path: Path) -> Iterator[Commands]:
    with openstack_batch(site, tmp_path, "region1") as run:
        yield Commands(run)


def assert_all_set(row: dict[str, Any], *names: str) -> None:
    missing = [name for name in names if row.get(name) in (None, "")]
    assert not missing, f"{missing} empty in {row}"


def test_every_openstack_cbr_command(site: Site, commands: Commands) -> None:
    cbr = otc_connection(site, "region1").cbr  # waits and cleanup, outside the commands
    resource = register_dir(site, "region1", "cli-cov", FILES)
    vault = commands.json(
        "vault",
        "create",
        "cli-cov",
        "--consistent-level",
        "crash_consistent",
        "--object-type",
        "turbo",
        "--size",
        "5",
        "--description",
        "by the CLI",
        "--tag",
        "env=test",
    )
    assert_all_set(vault, "ID", "created_at", "project_id", "provider_id", "user_id", "status")
    assert (vault["name"], vault["size"], vault["spec_code"], vault["description"]) == (
        "cli-cov",
        5,
        "vault.backup.turbo.normal",
        "by the CLI",
    )
    assert vault["tags"] == "value=test, key=env"
    vault_id = vault["ID"]
    added = commands.json(
        "vault", "associate", vault_id, "--resource", f"id={resource},type={TURBO}"
    )
    assert added == {"resource_1": resource}
    shown = commands.json("vault", "show", "cli-cov")
    assert (shown["ID"], shown["resource_id_1"], shown["resource_type_1"]) == (
        vault_id,
        resource,
        TURBO,
    )
    updated = commands.json("vault", "update", "cli-cov", "--name", "cli-cov-main", "--size", "7")
    assert (updated["name"], updated["size"]) == ("cli-cov-main", 7)
    listed = commands.json("vault", "list", "--object-type", "turbo", "--protect-type", "backup")
    assert {row["ID"]: row["name"] for row in listed}[vault_id] == "cli-cov-main"

    created = commands.json(
        "checkpoint", "create", "--vault-id", vault_id, "--backup-name", "cli-cov-backup"
    )
    assert (created["vault_id"], created["backup_name"], created["resource_1"]) == (
        vault_id,
        "cli-cov-backup",
        resource,
    )
    cbr.wait_for_checkpoint(cbr.get_checkpoint(created["id"]), interval=0.2, wait=60)
    checkpoint = commands.json("checkpoint", "show", created["id"])
    assert (checkpoint["status"], checkpoint["vault_name"], checkpoint["backup_name"]) == (
        "available",
        "cli-cov-main",
        "cli-cov-backup",
    )
    (row,) = commands.json("backup", "list", "--vault-id", vault_id, "--own-type", "private")
    assert_all_set(row, "id", "checkpoint_id", "created_at", "protected_at", "resource_az")
    assert (row["name"], row["status"], row["resource_id"], row["checkpoint_id"]) == (
        "cli-cov-backup",
        "available",
        resource,
        created["id"],
    )
    backup_id = row["id"]
    assert commands.json("backup", "show", "cli-cov-backup") == row
    broken = commands("backup", "list", "--resource-type", "OS::Nova::Server")
    assert broken.stderr.strip() == "Proxy._list() got multiple values for argument 'resource_type'"
    refused = commands("backup", "list", "--member-status", "accept")
    assert refused.returncode == 1 and "BackupService.9900" in refused.stderr

    data = site.server.root("region1") / "cli-cov"
    (data / "a.txt").write_text("overwritten\n")
    commands.quiet("backup", "restore", backup_id)
    (task,) = finished_tasks(cbr, vault_id, "restore")
    assert read_tree(data) == FILES
    tasks = {row["id"]: row for row in commands.json("task", "list")}
    assert (tasks[task.id]["operation_type"], tasks[task.id]["checkpoint_id"]) == (
        "restore",
        created["id"],
    )
    shown_task = commands.json("task", "show", task.id)
    assert_all_set(shown_task, "created_at", "ended_at", "started_at", "updated_at")
    assert (shown_task["vault_id"], shown_task["vault_name"], shown_task["error_code"]) == (
        vault_id,
        "cli-cov-main",
        "",
    )

    policy = commands.json("policy", "create", "cli-cov-policy", "--pattern", DAILY)
    assert (policy["name"], policy["enabled"], policy["schedule_pattern_1"]) == (
        "cli-cov-policy",
        True,
        DAILY,
    )
    assert_all_set(policy, "ID", "start_time")
    listed_policies = commands.json("policy", "list", "--operation-type", "backup")
    assert {row["ID"]: row["name"] for row in listed_policies}[policy["ID"]] == "cli-cov-policy"
    commands.client_bug(FIND_POLICY_BUG, "policy", "show", policy["ID"])
    commands.client_bug(FIND_POLICY_BUG, "policy", "update", policy["ID"], "--name", "renamed")
    assert cbr.get_policy(policy["ID"]).name == "cli-cov-policy"  # nothing was sent
    bound = commands.json("vault", "bind", vault_id, policy["ID"])
    assert (bound["vault_id"], bound["policy_id"]) == (vault_id, policy["ID"])
    commands.quiet("vault", "unbind", vault_id, policy["ID"])
    assert cbr.get_vault(vault_id).backup_policy_id is None
    commands.client_bug(FIND_POLICY_BUG, "policy", "delete", policy["ID"])
    cbr.delete_policy(policy["ID"], ignore_missing=False)

    commands.quiet("vault", "dissociate", vault_id, "--resource", resource)
    assert cbr.get_vault(vault_id).resources == []
    commands.quiet("backup", "delete", backup_id)
    wait_until(lambda: list(cbr.backups(vault_id=vault_id)), lambda left: not left)
    commands.quiet("vault", "delete", vault_id)
    missing = commands("vault", "show", vault_id)
    assert (missing.returncode, missing.stderr.strip()) == (1, f"No Vault found for {vault_id}")

    assert commands.called == to_test(COMMAND_TABLE)
