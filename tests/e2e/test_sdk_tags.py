"""The Huawei SDK, unmodified, against a real `opencbr serve` for vault tags, backup
expiration, backup metadata, a checkpoint's resource figures and the protectable's vault
(issue 16): each answer deserialises into the SDK's model with its required fields; each
refusal raises ClientRequestException with CBR's code."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import huaweicloudsdkcbr.v1 as cbr  # type: ignore[import-untyped]
import pytest
from huaweicloudsdkcore.exceptions.exceptions import (  # type: ignore[import-untyped]
    ClientRequestException,
)

from tests.e2e.flows import (
    BILLING_FIELDS,
    VAULT_FIELDS,
    Site,
    assert_populated,
    register_dir,
    register_server,
    sdk_back_up,
    sdk_vault,
)

pytestmark = [pytest.mark.slow]


def test_vault_tags_through_the_sdk(site: Site) -> None:
    client = site.cbr("region1")
    vault = sdk_vault(client, "sdk-tagged", "backup", [])
    create = cbr.VaultTagsCreateReq(tag=cbr.TagCreate(key="env", value="prod"))
    client.create_vault_tags(cbr.CreateVaultTagsRequest(vault_id=vault.id, body=create))
    batch = cbr.BulkCreateAndDeleteVaultTagsReq(
        action="create",
        tags=[
            cbr.BulkCreateAndDeleteTags(key="team", value="ops"),
            cbr.BulkCreateAndDeleteTags(key="tmp", value="x"),
        ],
    )
    client.batch_create_and_delete_vault_tags(
        cbr.BatchCreateAndDeleteVaultTagsRequest(vault_id=vault.id, body=batch)
    )
    client.delete_vault_tag(cbr.DeleteVaultTagRequest(vault_id=vault.id, key="tmp"))
    shown = client.show_vault_tag(cbr.ShowVaultTagRequest(vault_id=vault.id))
    assert [(t.key, t.value) for t in shown.tags] == [("env", "prod"), ("team", "ops")]
    assert shown.sys_tags == []
    vault_tags = client.show_vault(cbr.ShowVaultRequest(vault_id=vault.id)).vault.tags
    assert [(t.key, t.value) for t in vault_tags] == [("env", "prod"), ("team", "ops")]

    project = client.show_vault_project_tag(cbr.ShowVaultProjectTagRequest())
    assert ("env", ["prod"]) in [(t.key, t.values) for t in project.tags]

    query = cbr.VaultResourceInstancesReq(
        action="filter",
        tags=[cbr.TagsReq(key="env", values=["prod"]), cbr.TagsReq(key="team", values=[])],
        matches=[cbr.Match(key="resource_name", value="sdk-tag")],
        limit="10",
        offset="0",
    )
    found = client.show_vault_resource_instances(cbr.ShowVaultResourceInstancesRequest(body=query))
    assert found.total_count == 1
    (item,) = found.resources
    assert (item.resource_id, item.resource_name, item.sys_tags) == (vault.id, "sdk-tagged", [])
    assert [(t.key, t.value) for t in item.tags] == [("env", "prod"), ("team", "ops")]
    assert_populated(item.resource_detail.vault, VAULT_FIELDS)
    assert_populated(item.resource_detail.vault.billing, BILLING_FIELDS)
    counted = client.show_vault_resource_instances(
        cbr.ShowVaultResourceInstancesRequest(
            body=cbr.VaultResourceInstancesReq(
                action="count", tags=[cbr.TagsReq(key="team", values=["*op"])]
            )
        )
    )
    assert (counted.resources, counted.total_count) == (None, 1)


def test_tag_refusals_carry_cbr_codes(site: Site) -> None:
    client = site.cbr("region1")
    vault = sdk_vault(client, "sdk-tag-limits", "backup", [])
    with pytest.raises(ClientRequestException) as missing:
        client.delete_vault_tag(cbr.DeleteVaultTagRequest(vault_id=vault.id, key="absent"))
    assert (missing.value.status_code, missing.value.error_code) == (404, "BackupService.6601")
    ten = [cbr.BulkCreateAndDeleteTags(key=f"k{i}", value="v") for i in range(10)]
    client.batch_create_and_delete_vault_tags(
        cbr.BatchCreateAndDeleteVaultTagsRequest(
            vault_id=vault.id, body=cbr.BulkCreateAndDeleteVaultTagsReq(action="create", tags=ten)
        )
    )
    with pytest.raises(ClientRequestException) as full:
        client.create_vault_tags(
            cbr.CreateVaultTagsRequest(
                vault_id=vault.id,
                body=cbr.VaultTagsCreateReq(tag=cbr.TagCreate(key="eleventh", value="v")),
            )
        )
    assert (full.value.status_code, full.value.error_code) == (400, "BackupService.6600")
    with pytest.raises(ClientRequestException) as oversized:
        client.create_vault_tags(
            cbr.CreateVaultTagsRequest(
                vault_id=vault.id,
                body=cbr.VaultTagsCreateReq(tag=cbr.TagCreate(key="k" * 37, value="v")),
            )
        )
    assert (oversized.value.status_code, oversized.value.error_code) == (400, "BackupService.9900")
    # another project's vault (the caller's own, in region2) is not found from region1
    elsewhere = sdk_vault(site.cbr("region2"), "sdk-tag-elsewhere", "backup", [])
    with pytest.raises(ClientRequestException) as foreign:
        client.show_vault_tag(cbr.ShowVaultTagRequest(vault_id=elsewhere.id))
    assert (foreign.value.status_code, foreign.value.error_code) == (404, "BackupService.6105")


def test_expiration_metadata_checkpoint_figures_and_protectable_vault(site: Site) -> None:
    client = site.cbr("region1")
    server = register_server(
        site, "region1", "sdk-server", {"root": {"etc/hosts": "127.0.0.1 localhost\n"}}
    )
    billing = cbr.BillingCreate(
        consistent_level="crash_consistent", object_type="server", protect_type="backup", size=10
    )
    body = cbr.VaultCreateReq(
        vault=cbr.VaultCreate(
            name="sdk-server-vault",
            billing=billing,
            resources=[cbr.ResourceCreate(id=server, type="OS::Nova::Server")],
        )
    )
    vault = client.create_vault(cbr.CreateVaultRequest(body=body)).vault
    backup = sdk_back_up(client, vault.id, "sdk-server-backup")

    metadata = client.show_metadata(cbr.ShowMetadataRequest(backup_id=backup.id))
    assert metadata.backup_id == backup.id
    assert json.loads(metadata.backups)["id"] == backup.id
    assert json.loads(metadata.server)["server"]["id"] == server
    (volume,) = [json.loads(text)["volume"] for text in metadata.volumes]
    assert (volume["name"], volume["kind"]) == ("root", "tree")

    day = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    changed = client.update_expiration_time(
        cbr.UpdateExpirationTimeRequest(
            vault_id=vault.id,
            body=cbr.UpdateExpirationTimeReq(expect_expiration_date=day, time_zone="UTC+02:00"),
        )
    )
    assert (changed.affected_backups_count, changed.new_expiration_day) == (1, day)
    log = client.show_op_log(cbr.ShowOpLogRequest(operation_log_id=changed.operation_log_id))
    extra = log.operation_log.extra_info.update_expiration_time
    assert (extra.affected_backups_count, extra.expiration_day) == (1, day)
    shown = client.show_backup(cbr.ShowBackupRequest(backup_id=backup.id)).backup
    assert shown.expired_at is not None
    with pytest.raises(ClientRequestException) as past:
        client.update_expiration_time(
            cbr.UpdateExpirationTimeRequest(
                vault_id=vault.id,
                body=cbr.UpdateExpirationTimeReq(
                    expect_expiration_date="2000-01-01", time_zone="UTC"
                ),
            )
        )
    assert (past.value.status_code, past.value.error_code) == (400, "BackupService.9900")

    checkpoint = client.show_checkpoint(
        cbr.ShowCheckpointRequest(checkpoint_id=backup.checkpoint_id)
    ).checkpoint
    (resource,) = checkpoint.vault.resources
    assert (resource.id, resource.backup_count) == (server, "1")
    assert resource.backup_size is not None

    instance = client.show_protectable(
        cbr.ShowProtectableRequest(protectable_type="server", instance_id=server)
    ).instance
    bound = instance.protectable.vault
    assert bound.id == vault.id and bound.updated_at is not None
    assert_populated(bound, VAULT_FIELDS)
    assert_populated(bound.billing, BILLING_FIELDS)
    assert [r.id for r in bound.resources] == [server]

    turbo = register_dir(site, "region1", "sdk-no-metadata", {"a": "b"})
    tree_vault = sdk_vault(client, "sdk-tree-vault", "backup", [turbo])
    tree_backup = sdk_back_up(client, tree_vault.id, "sdk-tree-backup")
    with pytest.raises(ClientRequestException) as not_server:
        client.show_metadata(cbr.ShowMetadataRequest(backup_id=tree_backup.id))
    assert (not_server.value.status_code, not_server.value.error_code) == (
        400,
        "BackupService.9900",
    )
