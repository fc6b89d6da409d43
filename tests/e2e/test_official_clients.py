"""The official clients, unmodified, against a real `opencbr serve`.

The Huawei Cloud SDK signs with an access key made through the credentials API (the
`opencbr admin credential` commands are tested at the end);
openstacksdk + otcextensions and the `openstack` CLI log in through the Keystone subset.
One server serves the whole module; each test uses its own names.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from huaweicloudsdkcbr.v1 import (  # type: ignore[import-untyped]
    AddVaultResourceRequest,
    BackupReplicateReq,
    BackupReplicateReqBody,
    BackupRestore,
    BackupRestoreReq,
    BillingUpdate,
    CheckpointReplicateParam,
    CheckpointReplicateReq,
    CopyBackupRequest,
    CopyCheckpointRequest,
    DeleteBackupRequest,
    DeleteVaultRequest,
    ListBackupsRequest,
    ListOpLogsRequest,
    ListVaultRequest,
    ResourceCreate,
    RestoreBackupRequest,
    ShowOpLogRequest,
    ShowReplicationCapabilitiesRequest,
    ShowVaultRequest,
    UpdateVaultRequest,
    VaultAddResourceReq,
    VaultUpdate,
    VaultUpdateReq,
)
from huaweicloudsdkcore.exceptions.exceptions import (  # type: ignore[import-untyped]
    ClientRequestException,
)

from tests.e2e.flows import (
    BACKUP_FIELDS,
    OPENCBR,
    OPENSTACK,
    TURBO,
    Site,
    assert_populated,
    openstack_cli,
    openstack_environment,
    otc_connection,
    otc_vault,
    register_dir,
    sdk_back_up,
    sdk_vault,
    token_for,
    wait_until,
)

# openstacksdk 4.22 warns of its own pending removals (InfluxDB on every connect, configured
# or not; Resource._compute_attributes, which otcextensions still calls): not ours to fix.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack"),
]

T = TypeVar("T")
FILES = {"a.txt": "alpha\n", "sub/b.txt": "beta\n" * 1000}

# Fields of an operation log the SDK model marks as always present (cbr-sdk-models.md).
OPLOG_FIELDS = ("created_at", "error_info", "extra_info", "id", "operation_type", "project_id")
OPLOG_FIELDS += ("provider_id", "started_at", "ended_at", "status", "updated_at", "vault_id")


def read_tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in path.rglob("*") if p.is_file()}


def sdk_restore(client: Any, backup_id: str, vault_id: str, target: str) -> Any:
    """Restore into the registered directory `target`; return the finished operation log."""
    body = BackupRestoreReq(restore=BackupRestore(resource_id=target))
    client.restore_backup(RestoreBackupRequest(backup_id=backup_id, body=body))
    logs = wait_until(
        lambda: (
            client.list_op_logs(
                ListOpLogsRequest(operation_type="restore", vault_id=vault_id)
            ).operation_logs
        ),
        lambda found: bool(found) and found[0].status in ("success", "failed"),
    )
    log = client.show_op_log(ShowOpLogRequest(operation_log_id=logs[0].id)).operation_log
    assert_populated(log, OPLOG_FIELDS)
    assert log.status == "success", log
    assert log.extra_info.restore.target_resource_id == target
    return log


def skip_unless_routed(exc: ClientRequestException) -> None:
    """Replication routes are being built; skip only while the route itself is missing."""
    if exc.status_code == 404 and exc.error_code == "APIGW.0101":
        pytest.skip("replication route not served yet")


def test_huawei_sdk_backs_up_restores_and_cleans_up(site: Site) -> None:
    client = site.cbr("region1")
    capabilities = client.show_replication_capabilities(ShowReplicationCapabilitiesRequest())
    assert [(r.name, r.replication_destinations) for r in capabilities.regions] == [
        ("region1", ["region2"])
    ]
    resource = register_dir(site, "region1", "sdk-data", FILES)
    vault = sdk_vault(client, "sdk-vault", "backup", [])
    listed = client.list_vault(ListVaultRequest(name="sdk-vault"))
    assert [v.id for v in listed.vaults] == [vault.id]
    assert client.show_vault(ShowVaultRequest(vault_id=vault.id)).vault.name == "sdk-vault"
    update = VaultUpdateReq(vault=VaultUpdate(name="sdk-renamed", billing=BillingUpdate(size=20)))
    updated = client.update_vault(UpdateVaultRequest(vault_id=vault.id, body=update)).vault
    assert (updated.name, updated.billing.size) == ("sdk-renamed", 20)
    add = VaultAddResourceReq(resources=[ResourceCreate(id=resource, type=TURBO)])
    added = client.add_vault_resource(AddVaultResourceRequest(vault_id=vault.id, body=add))
    assert added.add_resource_ids == [resource]

    backup = sdk_back_up(client, vault.id, "sdk-backup")
    data = site.server.root("region1") / "sdk-data"
    (data / "a.txt").write_text("overwritten\n")
    sdk_restore(client, backup.id, vault.id, resource)
    assert read_tree(data) == FILES

    client.delete_backup(DeleteBackupRequest(backup_id=backup.id))
    wait_until(
        lambda: client.list_backups(ListBackupsRequest(vault_id=vault.id)).count,
        lambda count: count == 0,
    )
    client.delete_vault(DeleteVaultRequest(vault_id=vault.id))
    assert client.list_vault(ListVaultRequest(name="sdk-renamed")).count == 0
    request = ListOpLogsRequest(operation_type="vault_delete", vault_id=vault.id)
    (deleted,) = client.list_op_logs(request).operation_logs
    assert_populated(deleted, OPLOG_FIELDS)
    assert deleted.extra_info.common.task_id == deleted.id
    assert (deleted.extra_info.vault_delete.total_count, deleted.status) == (0, "success")


def test_huawei_sdk_replicates_to_region2_and_restores_the_replica(site: Site) -> None:
    source, destination = site.cbr("region1"), site.cbr("region2")
    resource = register_dir(site, "region1", "repl-data", FILES)
    vault = sdk_vault(source, "repl-src", "backup", [resource])
    replicas = sdk_vault(destination, "repl-dst", "replication", [])
    backup = sdk_back_up(source, vault.id, "repl-first")
    param = CheckpointReplicateParam(
        vault_id=vault.id,
        destination_project_id=site.projects["region2"],
        destination_region="region2",
        destination_vault_id=replicas.id,
    )
    try:
        reply = source.copy_checkpoint(
            CopyCheckpointRequest(body=CheckpointReplicateReq(replicate=param))
        )
    except ClientRequestException as exc:
        skip_unless_routed(exc)
        raise
    assert [b.backup_id for b in reply.replication.backups] == [backup.id]
    assert (reply.replication.source_region, reply.replication.destination_region) == (
        "region1",
        "region2",
    )

    replica = follow_replica(destination, replicas.id, 1)[0]
    assert replica.image_type == "replication"
    shown = source.list_backups(ListBackupsRequest(vault_id=vault.id, show_replication=True))
    record = shown.backups[0].replication_records[0]
    assert (record.status, record.destination_backup_id) == ("success", replica.id)
    logs = source.list_op_logs(ListOpLogsRequest(operation_type="replication", vault_id=vault.id))
    assert [log.status for log in logs.operation_logs] == ["success"]
    assert_populated(logs.operation_logs[0], OPLOG_FIELDS)

    target = register_dir(site, "region2", "repl-target", {})
    sdk_restore(destination, replica.id, replicas.id, target)
    assert read_tree(site.server.root("region2") / "repl-target") == FILES

    # One more backup, replicated on its own.
    (site.server.root("region1") / "repl-data" / "c.txt").write_text("gamma\n")
    second = sdk_back_up(source, vault.id, "repl-second")
    body = BackupReplicateReq(
        replicate=BackupReplicateReqBody(
            destination_project_id=site.projects["region2"],
            destination_region="region2",
            destination_vault_id=replicas.id,
        )
    )
    copied = source.copy_backup(CopyBackupRequest(backup_id=second.id, body=body))
    assert copied.replication.backup_id == second.id
    assert len(follow_replica(destination, replicas.id, 2)) == 2


def follow_replica(client: Any, vault_id: str, count: int) -> list[Any]:
    """The replicas in `vault_id` once there are `count` of them, all available."""
    request = ListBackupsRequest(vault_id=vault_id, image_type="replication")
    backups: list[Any] = wait_until(
        lambda: client.list_backups(request).backups,
        lambda found: len(found) == count and all(b.status == "available" for b in found),
    )
    for backup in backups:
        assert_populated(backup, BACKUP_FIELDS)
    return backups


# --- openstacksdk + otcextensions (Keystone token) -----------------------------------------


def otc_back_up(conn: Any, vault_id: str, name: str) -> Any:
    checkpoint = conn.cbr.create_checkpoint(
        vault_id=vault_id, parameters={"name": name, "description": "openstacksdk"}
    )
    conn.cbr.wait_for_checkpoint(checkpoint, interval=0.5, wait=60)
    (backup,) = list(conn.cbr.backups(checkpoint_id=checkpoint.id))
    return conn.cbr.get_backup(backup.id)


def otc_restore(conn: Any, backup: Any, vault_id: str, target: str) -> None:
    conn.cbr.restore_data(backup, resource_id=target)
    wait_until(
        lambda: [
            task.status
            for task in conn.cbr.tasks()
            if task.operation_type == "restore" and task.vault_id == vault_id
        ],
        lambda statuses: statuses == ["success"],
    )


def test_openstacksdk_with_otcextensions_drives_vaults_backups_and_restores(site: Site) -> None:
    conn = otc_connection(site, "region1")
    resource = register_dir(site, "region1", "osdk-data", FILES)
    made = [otc_vault(conn, f"osdk-{i}") for i in range(3)]
    paged = [v.name for v in conn.cbr.vaults(limit=1)]  # one vault a page, `marker` paging
    assert len(paged) == len(set(paged))
    assert {"osdk-0", "osdk-1", "osdk-2"} <= set(paged)
    vault = conn.cbr.find_vault("osdk-0")
    assert vault.id == made[0].id
    vault = conn.cbr.update_vault(conn.cbr.get_vault(vault.id), name="osdk-main")
    assert conn.cbr.get_vault(vault.id).name == "osdk-main"
    conn.cbr.associate_resources(vault, [{"id": resource, "type": TURBO}])

    backup = otc_back_up(conn, vault.id, "osdk-backup")
    assert (backup.status, backup.resource_id) == ("available", resource)
    data = site.server.root("region1") / "osdk-data"
    (data / "a.txt").write_text("overwritten\n")
    otc_restore(conn, backup, vault.id, resource)
    assert read_tree(data) == FILES

    conn.cbr.delete_backup(backup)
    wait_until(lambda: list(conn.cbr.backups(vault_id=vault.id)), lambda left: not left)
    for each in made:
        conn.cbr.delete_vault(each)
    assert conn.cbr.find_vault("osdk-main") is None


def test_openstacksdk_replicates_through_the_proxy_and_restores_the_replica(site: Site) -> None:
    """otcextensions has no replicate call; its proxy reaches the route as documented."""
    source, destination = otc_connection(site, "region1"), otc_connection(site, "region2")
    resource = register_dir(site, "region1", "osdk-repl", FILES)
    vault = otc_vault(source, "osdk-repl-src")
    source.cbr.associate_resources(vault, [{"id": resource, "type": TURBO}])
    replicas = otc_vault(destination, "osdk-repl-dst", "replication")
    backup = otc_back_up(source, vault.id, "osdk-repl")
    replicate = {
        "vault_id": vault.id,
        "destination_project_id": site.projects["region2"],
        "destination_region": "region2",
        "destination_vault_id": replicas.id,
    }
    reply = source.cbr.post(
        "/checkpoints/replicate", json={"replicate": replicate}, raise_exc=False
    )
    if reply.status_code == 404 and reply.json().get("error_code") == "APIGW.0101":
        pytest.skip("replication route not served yet")
    assert reply.status_code == 200, reply.text
    assert [b["backup_id"] for b in reply.json()["replication"]["backups"]] == [backup.id]

    (replica,) = wait_until(
        lambda: list(destination.cbr.backups(vault_id=replicas.id, image_type="replication")),
        lambda found: len(found) == 1 and found[0].status == "available",
    )
    target = register_dir(site, "region2", "osdk-repl-target", {})
    otc_restore(destination, replica, replicas.id, target)
    assert read_tree(site.server.root("region2") / "osdk-repl-target") == FILES
    replications = [t for t in source.cbr.tasks() if t.operation_type == "replication"]
    assert [t.status for t in replications if t.vault_id == vault.id] == ["success"]


def test_openstacksdk_pages_backups_under_every_sort(site: Site) -> None:
    """`conn.cbr.backups(limit=..., sort=...)` asks for the next page with `marker`."""
    conn = otc_connection(site, "region1")
    resource = register_dir(site, "region1", "osdk-sorted", FILES)
    vault = otc_vault(conn, "osdk-sorted")
    conn.cbr.associate_resources(vault, [{"id": resource, "type": TURBO}])
    for name in ("sorted-b", "sorted-a", "sorted-b", "sorted-c"):
        otc_back_up(conn, vault.id, name)
    for sort in ("name:asc", "name", "status,created_at:asc", "protected_at:asc", "id"):
        whole = [b.id for b in conn.cbr.backups(vault_id=vault.id, sort=sort)]
        assert len(whole) == 4
        for limit in (1, 3):
            paged = [b.id for b in conn.cbr.backups(vault_id=vault.id, sort=sort, limit=limit)]
            assert paged == whole, (sort, limit)
    by_name = [b.name for b in conn.cbr.backups(vault_id=vault.id, sort="name:asc", limit=1)]
    assert by_name == ["sorted-a", "sorted-b", "sorted-b", "sorted-c"]


def _bytes_reused(log: str, backup_id: str) -> int:
    """What the server logged as not read again for one backup (`backup unit written`)."""
    (line,) = [x for x in log.splitlines() if "backup unit written" in x and backup_id in x]
    found = re.search(r"bytes_reused\W+(\d+)", line)
    assert found is not None, line
    return int(found.group(1))


def test_openstack_cli_checkpoint_no_incremental_reads_everything_again(
    site: Site, tmp_path: Path
) -> None:
    conn = otc_connection(site, "region1")
    big = os.urandom(2 << 20).hex()  # a file of 4 MiB: unchanged, it is not read again
    resource = register_dir(site, "region1", "cli-full", {**FILES, "big.txt": big})
    vault = otc_vault(conn, "cli-full")
    conn.cbr.associate_resources(vault, [{"id": resource, "type": TURBO}])
    first = otc_back_up(conn, vault.id, "cli-first")
    second = otc_back_up(conn, vault.id, "cli-second")
    # otcextensions reads `incremental` from `extend_info`.
    assert (first.extend_info.incremental, second.extend_info.incremental) == (False, True)
    # Every file is unchanged: the large one and the small ones' group are not read.
    assert _bytes_reused(site.server.log(), second.id) == len(big) + len(
        "alpha\n" + "beta\n" * 1000
    )

    args = ("cbr", "checkpoint", "create", "--vault-id", vault.id, "--no-incremental", "-f", "json")
    done = openstack_cli(site, tmp_path, "region1", *args, "--backup-name", "cli-full")
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    checkpoint = conn.cbr.get_checkpoint(created["id"])
    conn.cbr.wait_for_checkpoint(checkpoint, interval=0.5, wait=60)
    (full,) = list(conn.cbr.backups(checkpoint_id=checkpoint.id))
    assert (full.name, full.extend_info.incremental) == ("cli-full", False)
    assert _bytes_reused(site.server.log(), full.id) == 0


def test_openstack_cli_lists_vaults_from_a_clouds_yaml(site: Site, tmp_path: Path) -> None:
    project = site.projects["region2"]
    body = {
        "vault": {
            "name": "cli-vault",
            "billing": {
                "consistent_level": "crash_consistent",
                "object_type": "turbo",
                "protect_type": "backup",
                "size": 10,
            },
            "resources": [],
        }
    }
    headers = {"X-Auth-Token": token_for(site.server, project)}
    created = httpx.post(f"{site.server.url}/v3/{project}/vaults", json=body, headers=headers)
    assert created.status_code == 200, created.text
    done = openstack_cli(site, tmp_path, "region2", "cbr", "vault", "list", "-f", "json")
    assert done.returncode == 0, done.stderr
    rows = {row["ID"]: row["name"] for row in json.loads(done.stdout)}
    served = httpx.get(f"{site.server.url}/v3/{project}/vaults", headers=headers).json()
    assert rows == {vault["id"]: vault["name"] for vault in served["vaults"]}
    assert rows[created.json()["vault"]["id"]] == "cli-vault"


def test_openstack_cli_set_up_for_another_region_than_its_project_finds_no_cbr(
    site: Site, tmp_path: Path
) -> None:
    """A clouds.yaml whose region is not its project's: the token's catalog has CBR in the
    project's region only, so the CLI stops with an endpoint error instead of listing the
    vaults of the project's region as if they were the other region's."""
    environment = openstack_environment(site, tmp_path, "region2")  # project region2's
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(clouds.read_text().replace("region_name: region2", "region_name: region1"))
    done = subprocess.run(
        [OPENSTACK, "--os-cloud", "opencbr", "cbr", "vault", "list", "-f", "json"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0, done.stdout
    assert "endpoint" in done.stderr.lower(), done.stderr


# --- operator commands --------------------------------------------------------------------


def test_admin_credential_commands_create_list_and_delete(site: Site) -> None:
    server = site.server
    created = server.admin("credential", "create", "--user", "admin")
    assert len(created["access"]) == 20 and len(created["secret"]) == 40
    listed = server.admin("credential", "list", "--user", "admin")["credentials"]
    assert created["access"] in [c["access"] for c in listed]
    assert all("secret" not in c for c in listed)
    assert server.admin("credential", "delete", "--access", created["access"]) == {
        "deleted": created["access"]
    }
    gone = site.cbr("region1", created["access"], created["secret"])
    with pytest.raises(ClientRequestException) as refused:
        gone.list_vault(ListVaultRequest())
    assert (refused.value.status_code, refused.value.error_code) == (401, "APIGW.0301")
    config = str(server.config)
    failed = subprocess.run(
        [*OPENCBR, "admin", "credential", "create", "--user", "ghost", "--config", config],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1].startswith("error:") and failed.stdout == ""
