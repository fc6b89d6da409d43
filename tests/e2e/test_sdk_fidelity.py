"""The Huawei SDK, unmodified, against a real `opencbr serve` for the operations of issue 16
built here: each answer deserialises into the SDK's model with its required fields and the
right values; each operation opencbr refuses raises ClientRequestException with its code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import huaweicloudsdkcbr.v1 as cbr  # type: ignore[import-untyped]
import pytest
from huaweicloudsdkcore.exceptions.exceptions import (  # type: ignore[import-untyped]
    ClientRequestException,
)

from opencbr.api.routes.unsupported import UNSUPPORTED, Unsupported
from tests.e2e.flows import (
    BACKUP_FIELDS,
    BILLING_FIELDS,
    TURBO,
    VAULT_FIELDS,
    Site,
    assert_populated,
    register_dir,
    sdk_back_up,
    sdk_vault,
)
from tests.e2e.sdk_required import missing_required

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack"),
]


def test_summary_batch_update_and_external_vaults(site: Site) -> None:
    region1, region2 = site.cbr("region1"), site.cbr("region2")
    before = region1.show_summary(cbr.ShowSummaryRequest())
    resource = register_dir(site, "region1", "summary-dir", {"blob": "x" * 4096})
    vault = sdk_vault(region1, "summary-vault", "backup", [resource])
    sdk_back_up(region1, vault.id, "summary-backup")
    after = region1.show_summary(cbr.ShowSummaryRequest())
    assert (after.size, after.used_size) == (before.size + 10, max(before.used_size, 1))

    body = cbr.BatchUpdateVaultRequestBody(
        vault=cbr.VaultBatchUpdate(smn_notify=False, threshold=66)
    )
    updated = region1.batch_update_vault(cbr.BatchUpdateVaultRequest(body=body))
    assert vault.id in updated.updated_vaults_id
    shown = region1.show_vault(cbr.ShowVaultRequest(vault_id=vault.id)).vault
    assert (shown.smn_notify, shown.threshold) == (False, 66)

    remote = sdk_vault(region2, "external-vault", "replication", [])
    request = cbr.ListExternalVaultRequest(
        external_project_id=site.projects["region2"],
        region_id="region2",
        protect_type="replication",
    )
    listed = region1.list_external_vault(request)
    assert remote.id in [v.id for v in listed.vaults]
    assert all(v.billing.protect_type == "replication" for v in listed.vaults)
    assert (listed.count, listed.offset) == (len(listed.vaults), 0)
    for found in listed.vaults:
        assert_populated(found, VAULT_FIELDS)
        assert_populated(found.billing, BILLING_FIELDS)
        assert found.project_id == site.projects["region2"]


def test_storage_usage(site: Site) -> None:
    client = site.cbr("region1")
    resource = register_dir(site, "region1", "usage-dir", {"a.txt": "alpha\n"})
    vault = sdk_vault(client, "usage-vault", "backup", [resource])
    sdk_back_up(client, vault.id, "usage-backup")
    usage = client.show_storage_usage(cbr.ShowStorageUsageRequest(resource_id=resource))
    assert usage.resource_count == 1
    (item,) = usage.storage_usage
    assert (item.resource_id, item.resource_name, item.resource_type) == (
        resource,
        "usage-dir",
        "OS::Sfs::Turbo",
    )
    shown = client.show_vault(cbr.ShowVaultRequest(vault_id=vault.id)).vault.resources[0]
    assert (item.backup_count, item.backup_size, item.backup_size_multiaz) == (
        1,
        shown.backup_size,
        0,
    )
    paged = client.show_storage_usage(cbr.ShowStorageUsageRequest(limit=1, offset=0))
    assert len(paged.storage_usage) == 1 and paged.resource_count >= 1


def test_features(site: Site) -> None:
    client = site.cbr("region1")
    listed = client.list_features(cbr.ListFeaturesRequest()).body
    assert listed["replication.enable"] is True
    assert listed["replication.destination_regions"] == ["region2"]
    shown = client.show_feature(cbr.ShowFeatureRequest(feature_key="features.backup_double_az"))
    assert shown.body == {"features.backup_double_az": False}
    with pytest.raises(ClientRequestException) as refused:
        client.show_feature(cbr.ShowFeatureRequest(feature_key="features.bccrack_enable"))
    assert (refused.value.status_code, refused.value.error_code) == (400, "BackupService.9900")


def test_identity_lookups(site: Site) -> None:
    client = site.cbr("region1")
    listed = client.list_projects(cbr.ListProjectsRequest())
    assert {p.name: p.id for p in listed.projects} == site.projects
    for project in listed.projects:
        assert project.enabled is True and project.is_domain is False
        assert project.domain_id and project.links._self.endswith(project.id)
    assert listed.links._self.endswith("/identity/v3/auth/projects")
    domain = client.list_domain_projects(cbr.ListDomainProjectsRequest(domain_name="Default"))
    assert {p.project_name: p.project_id for p in domain.projects} == site.projects
    other = client.list_domain_projects(cbr.ListDomainProjectsRequest(domain_name="elsewhere"))
    assert other.projects == []


def test_protectables_resource_binding_and_backup_rename(site: Site) -> None:
    """The supported operations no other SDK test drives: list_protectable,
    set_vault_resource, remove_vault_resource and update_backup."""
    client = site.cbr("region1")
    resource = register_dir(site, "region1", "sdk-bound-dir", {"c.txt": "gamma\n"})
    vault = sdk_vault(client, "sdk-bound-vault", "backup", [resource])
    listed = client.list_protectable(
        cbr.ListProtectableRequest(protectable_type="turbo", name="sdk-bound-dir")
    ).instances
    assert [(i.id, i.type, i.size) for i in listed] == [(resource, TURBO, 1)]
    assert_populated(listed[0].protectable.vault, VAULT_FIELDS)
    assert listed[0].protectable.vault.id == vault.id

    def auto_protect() -> Any:
        shown = client.show_vault(cbr.ShowVaultRequest(vault_id=vault.id)).vault
        return [(r.id, r.auto_protect) for r in shown.resources]

    for action, expected in (("suspend", False), ("unsuspend", True)):
        body = cbr.VaultSetResourceReq(resource_ids=[resource], action=action)
        answer = client.set_vault_resource(
            cbr.SetVaultResourceRequest(vault_id=vault.id, body=body)
        )
        assert answer.set_resource_ids == [resource]
        assert auto_protect() == [(resource, expected)]

    backup = sdk_back_up(client, vault.id, "sdk-before-rename")
    rename = cbr.BackupUpdateReq(backup=cbr.BackupUpdate(name="sdk-renamed-backup"))
    renamed = client.update_backup(cbr.UpdateBackupRequest(backup_id=backup.id, body=rename))
    assert_populated(renamed.backup, BACKUP_FIELDS)
    assert (renamed.backup.id, renamed.backup.name) == (backup.id, "sdk-renamed-backup")
    shown = client.show_backup(cbr.ShowBackupRequest(backup_id=backup.id)).backup
    assert shown.name == "sdk-renamed-backup"

    remove = cbr.VaultRemoveResourceReq(resource_ids=[resource])
    removed = client.remove_vault_resource(
        cbr.RemoveVaultResourceRequest(vault_id=vault.id, body=remove)
    )
    assert removed.remove_resource_ids == [resource]
    assert auto_protect() == []
    assert client.list_backups(cbr.ListBackupsRequest(vault_id=vault.id)).count == 1
    with pytest.raises(ClientRequestException) as gone:
        client.remove_vault_resource(cbr.RemoveVaultResourceRequest(vault_id=vault.id, body=remove))
    assert (gone.value.status_code, gone.value.error_code) == (400, "BackupService.6135")


def _request_name(operation: str) -> str:
    return "".join(part.capitalize() for part in operation.split("_")) + "Request"


def _request_class(entry: Unsupported) -> Any:
    return getattr(cbr, _request_name(entry.operation))


def _request(entry: Unsupported, site: Site) -> Any:
    """The SDK's request object for the operation, its path parameters filled in."""
    request = _request_class(entry)()
    for param in re.findall(r"{(\w+)}", entry.path):
        if param != "project_id":
            setattr(request, param, site.projects["region2"] if "project" in param else "x1")
    return request


@pytest.mark.parametrize("entry", UNSUPPORTED, ids=lambda entry: entry.operation)
def test_unsupported_operations_raise_the_documented_error(
    site: Site,
    entry: Unsupported,
) -> None:
    client = site.cbr("region1")
    with pytest.raises(ClientRequestException) as refused:
        getattr(client, entry.operation)(_request(entry, site))
    error = refused.value
    assert (error.status_code, error.error_code) == (400, "BackupService.9900")
    assert error.error_msg == f"The operation {entry.operation} is not supported by opencbr."


def test_the_table_names_the_sdks_methods_and_paths() -> None:
    """The SDK's own request description is the authority for each row's method and path."""
    for entry in UNSUPPORTED:
        info = getattr(cbr.CbrClient, f"_{entry.operation}_http_info")(_request_class(entry)())
        assert (info["method"], info["resource_path"]) == (entry.method, entry.path)


def _sdk_operations() -> list[str]:
    """The SDK's operations, by the names of its client's methods."""
    return [
        match.group(1)
        for name in dir(cbr.CbrClient)
        if (match := re.fullmatch(r"_(\w+)_http_info", name))
    ]


def test_every_sdk_operation_is_driven_by_an_e2e_test() -> None:
    """Each of the SDK's 74 operations is sent by some test of this directory through the
    SDK (its request class named there), or is a refused operation of UNSUPPORTED (sent by
    test_unsupported_operations_raise_the_documented_error)."""
    operations = _sdk_operations()
    assert len(operations) == 74
    sources = "".join(path.read_text() for path in Path(__file__).parent.glob("test_*.py"))
    sources += (Path(__file__).parent / "flows.py").read_text()
    refused = {entry.operation for entry in UNSUPPORTED}
    undriven = [
        operation
        for operation in operations
        if operation not in refused and not re.search(rf"\b{_request_name(operation)}\(", sources)
    ]
    assert not undriven


def test_the_readme_coverage_table_names_every_sdk_operation_once() -> None:
    """The README's coverage table lists each SDK operation in its first column, once,
    and no name the SDK does not have; refused ones say so."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("### Coverage of the official SDK's operations")
    rows = [
        line.split("|")
        for line in readme[start : readme.index("```", start)].splitlines()
        if line.startswith("| `")
    ]
    named = [name for row in rows for name in re.findall(r"`(\w+)`", row[1])]
    assert sorted(named) == sorted(_sdk_operations())
    refused = {entry.operation for entry in UNSUPPORTED}
    for row in rows:
        if set(re.findall(r"`(\w+)`", row[1])) & refused:
            assert row[3].strip().startswith("no"), row


def test_the_required_field_check_finds_a_missing_field_at_any_depth() -> None:
    billing = cbr.Billing(allocated=1, consistent_level="crash_consistent", protect_type="backup")
    vault = cbr.Vault(id="v", project_id="p", billing=billing, resources=[cbr.ResourceResp()])
    answer = cbr.ListVaultResponse(vaults=[vault], count=1)
    assert missing_required(answer) == [
        "ListVaultResponse.vaults[].billing.spec_code",
        "ListVaultResponse.vaults[].billing.used",
        "ListVaultResponse.vaults[].resources[].id",
        "ListVaultResponse.vaults[].resources[].type",
    ]
    first = cbr.BackupResp(parent_id=None, protected_at=None)  # null by design (MAY_BE_NULL)
    assert "BackupResp.parent_id" not in missing_required(first)
