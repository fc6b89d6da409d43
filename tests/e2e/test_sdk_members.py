"""Backup sharing and resource migration through the official clients against a real
`opencbr serve`: the Huawei SDK's five member operations, the backup list's sharing
filters and migrate_vault_resource, and otcextensions' member proxy methods (it has none
for migration); every answer deserialises into the client's model."""

from __future__ import annotations

import huaweicloudsdkcbr.v1 as cbr  # type: ignore[import-untyped]
import pytest
from huaweicloudsdkcore.exceptions.exceptions import (  # type: ignore[import-untyped]
    ClientRequestException,
)

from tests.e2e.flows import (
    Site,
    admin_project,
    assert_populated,
    otc_connection,
    register_dir,
    sdk_back_up,
    sdk_vault,
    wait_until,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack"),
]
MEMBER_FIELDS = ("id", "status", "backup_id", "dest_project_id", "created_at", "updated_at")


def _raises(code: str, call: object, *args: object) -> None:
    with pytest.raises(ClientRequestException) as caught:
        call(*args)  # type: ignore[operator]
    assert caught.value.error_code == code, caught.value


def test_members_through_the_huawei_sdk(site: Site) -> None:
    owner = site.cbr("region1")
    resource = register_dir(site, "region1", "sdk-shared", {"a.txt": "shared\n"})
    vault = sdk_vault(owner, "sdk-shared-vault", "backup", [resource])
    backup = sdk_back_up(owner, vault.id, "sdk-shared-backup")
    partner_id = admin_project(site, "sdk-partner")
    partner = site.cbr("region1", project_id=partner_id)
    partner_vault = sdk_vault(partner, "sdk-partner-vault", "backup", [])

    body = cbr.AddMembersReq(members=[partner_id])
    added = owner.add_member(cbr.AddMemberRequest(backup_id=backup.id, body=body)).members
    assert [m.dest_project_id for m in added] == [partner_id]
    assert_populated(added[0], MEMBER_FIELDS)
    listed = owner.show_members_detail(cbr.ShowMembersDetailRequest(backup_id=backup.id))
    assert (listed.count, listed.members[0].status) == (1, "pending")
    shown = owner.show_member_detail(
        cbr.ShowMemberDetailRequest(backup_id=backup.id, member_id=partner_id)
    ).member
    assert (shown.id, shown.status) == (added[0].id, "pending")

    def shared(**filters: str) -> list[str]:
        found = partner.list_backups(cbr.ListBackupsRequest(**filters))
        return [b.id for b in found.backups]

    assert shared(own_type="shared", member_status="pending") == [backup.id]
    assert shared(own_type="all_granted") == []
    answer = cbr.UpdateMember(status="accepted", vault_id=partner_vault.id)
    request = cbr.UpdateMemberStatusRequest(member_id=added[0].id, backup_id=backup.id, body=answer)
    accepted = partner.update_member_status(request).member
    assert (accepted.status, accepted.vault_id) == ("accepted", partner_vault.id)
    assert shared(own_type="all_granted") == [backup.id]
    assert shared(own_type="shared", vault_id=partner_vault.id) == [backup.id]
    seen = partner.show_backup(cbr.ShowBackupRequest(backup_id=backup.id)).backup
    assert (seen.id, seen.project_id) == (backup.id, site.projects["region1"])
    _raises(
        "BackupService.6711", partner.delete_backup, cbr.DeleteBackupRequest(backup_id=backup.id)
    )

    owner.delete_member(cbr.DeleteMemberRequest(backup_id=backup.id, member_id=added[0].id))
    _raises("BackupService.6200", partner.show_backup, cbr.ShowBackupRequest(backup_id=backup.id))
    assert shared(own_type="shared") == []


def test_members_through_otcextensions(site: Site) -> None:
    owner_sdk = site.cbr("region1")
    resource = register_dir(site, "region1", "otc-shared", {"b.txt": "otc\n"})
    vault = sdk_vault(owner_sdk, "otc-shared-vault", "backup", [resource])
    backup = sdk_back_up(owner_sdk, vault.id, "otc-shared-backup")
    partner_id = admin_project(site, "otc-partner")
    partner_vault = sdk_vault(
        site.cbr("region1", project_id=partner_id), "otc-partner-vault", "backup", []
    )
    owner = otc_connection(site, "region1")
    partner = otc_connection(site, "region1", project_id=partner_id)

    (added,) = owner.cbr.add_members(backup.id, [partner_id])  # fetches each by project id
    assert (added.dest_project_id, added.status) == (partner_id, "pending")
    assert [m.dest_project_id for m in owner.cbr.members(backup.id)] == [partner_id]
    assert owner.cbr.get_member(backup.id, partner_id).status == "pending"
    assert [b.id for b in partner.cbr.backups(own_type="shared")] == [backup.id]

    updated = partner.cbr.update_member(backup.id, added, status="accepted", vault=partner_vault.id)
    assert (updated.status, updated.vault_id) == ("accepted", partner_vault.id)
    assert [b.id for b in partner.cbr.backups(own_type="all_granted")] == [backup.id]
    assert partner.cbr.get_backup(backup.id).id == backup.id

    owner.cbr.delete_member(backup.id, added, ignore_missing=False)
    assert list(owner.cbr.members(backup.id)) == []
    assert list(partner.cbr.backups(own_type="shared")) == []


def test_migrate_vault_resource_through_the_huawei_sdk(site: Site) -> None:
    client = site.cbr("region1")
    resource = register_dir(site, "region1", "sdk-migrating", {"m.txt": "moves\n"})
    source = sdk_vault(client, "sdk-migrate-from", "backup", [resource])
    backup = sdk_back_up(client, source.id, "sdk-migrated")
    dest = sdk_vault(client, "sdk-migrate-to", "backup", [])
    body = cbr.VaultMigrateResourceReq(destination_vault_id=dest.id, resource_ids=[resource])
    request = cbr.MigrateVaultResourceRequest(vault_id=source.id, body=body)
    assert client.migrate_vault_resource(request).migrated_resources == [resource]
    wait_until(
        lambda: client.show_vault(cbr.ShowVaultRequest(vault_id=dest.id)).vault,
        lambda vault: [r.id for r in vault.resources] == [resource],
    )
    moved = client.show_backup(cbr.ShowBackupRequest(backup_id=backup.id)).backup
    assert moved.vault_id == dest.id
    again = cbr.MigrateVaultResourceRequest(vault_id=source.id, body=body)
    _raises("BackupService.6135", client.migrate_vault_resource, again)
