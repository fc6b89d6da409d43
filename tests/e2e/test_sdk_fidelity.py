"""The Huawei SDK, unmodified, against a real `opencbr serve` for the operations of issue 16
built here: each answer deserialises into the SDK's model with its required fields and the
right values; each operation opencbr refuses raises ClientRequestException with its code."""

from __future__ import annotations

import re
from typing import Any

import huaweicloudsdkcbr.v1 as cbr  # type: ignore[import-untyped]
import pytest
from huaweicloudsdkcore.exceptions.exceptions import (  # type: ignore[import-untyped]
    ClientRequestException,
)

from opencbr.api.routes.unsupported import UNSUPPORTED, Unsupported
from tests.e2e.flows import (
    BILLING_FIELDS,
    VAULT_FIELDS,
    Site,
    assert_populated,
    register_dir,
    sdk_back_up,
    sdk_vault,
)

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


def _request_class(entry: Unsupported) -> Any:
    return getattr(
        cbr, "".join(part.capitalize() for part in entry.operation.split("_")) + "Request"
    )


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
