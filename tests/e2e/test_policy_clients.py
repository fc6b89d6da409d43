"""Policies through the official clients, unmodified, against one real `opencbr serve`:
the Huawei SDK (AK/SK), openstacksdk + otcextensions and the `openstack cbr policy` CLI
(Keystone tokens). Each test uses its own names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from huaweicloudsdkcbr.v1 import (  # type: ignore[import-untyped]
    AssociateVaultPolicyRequest,
    BillingCreate,
    CreatePolicyRequest,
    CreateVaultRequest,
    DeletePolicyRequest,
    DisassociateVaultPolicyRequest,
    ListPoliciesRequest,
    ListVaultRequest,
    PolicyCreate,
    PolicyCreateReq,
    PolicyoODCreate,
    PolicyTriggerPropertiesReq,
    PolicyTriggerPropertiesUpdateReq,
    PolicyTriggerReq,
    PolicyTriggerUpdateReq,
    PolicyUpdate,
    PolicyUpdateReq,
    ShowPolicyRequest,
    ShowVaultRequest,
    UpdatePolicyRequest,
    VaultAssociate,
    VaultCreate,
    VaultCreateReq,
    VaultDissociate,
)
from huaweicloudsdkcore.exceptions.exceptions import (  # type: ignore[import-untyped]
    ClientRequestException,
)
from openstack import exceptions as os_exceptions

from tests.e2e.flows import Site, openstack_cli, otc_connection, otc_vault, sdk_vault

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack"),
]

DAILY = "FREQ=DAILY;INTERVAL=1;BYHOUR=6;BYMINUTE=00"
WEEKENDS = "FREQ=WEEKLY;BYDAY=SA,SU;BYHOUR=14;BYMINUTE=30"
# Fields the SDK's Policy model marks as always present.
POLICY_FIELDS = ("enabled", "id", "name", "operation_type", "trigger", "operation_definition")


def sdk_policy(client: Any, name: str, operation_type: str, definition: Any) -> Any:
    trigger = PolicyTriggerReq(properties=PolicyTriggerPropertiesReq(pattern=[DAILY, WEEKENDS]))
    body = PolicyCreate(
        name=name,
        operation_type=operation_type,
        operation_definition=definition,
        trigger=trigger,
        enabled=True,
    )
    policy = client.create_policy(CreatePolicyRequest(body=PolicyCreateReq(policy=body))).policy
    assert [getattr(policy, field) is not None for field in POLICY_FIELDS] == [True] * 6
    return policy


def test_huawei_sdk_creates_binds_lists_updates_and_deletes_policies(site: Site) -> None:
    client = site.cbr("region1")
    retention = PolicyoODCreate(max_backups=3, day_backups=2, timezone="UTC+08:00")
    backup = sdk_policy(client, "sdk-daily", "backup", retention)
    assert (backup.operation_definition.max_backups, backup.operation_definition.timezone) == (
        3,
        "UTC+08:00",
    )
    assert backup.trigger.properties.pattern == [DAILY, WEEKENDS]
    assert (backup.trigger.name, backup.trigger.type, backup.policy_type) == (
        "default",
        "time",
        "custom_policy",
    )
    target = PolicyoODCreate(
        destination_region="region2",
        destination_project_id=site.projects["region2"],
        max_backups=5,
        enable_acceleration=True,
    )
    replication = sdk_policy(client, "sdk-repl", "replication", target)
    source = sdk_vault(client, "sdk-policy-src", "backup", [])
    replicas = sdk_vault(site.cbr("region2"), "sdk-policy-dst", "replication", [])

    bound = client.associate_vault_policy(
        AssociateVaultPolicyRequest(
            vault_id=source.id,
            body=VaultAssociate(policy_id=replication.id, destination_vault_id=replicas.id),
        )
    ).associate_policy
    assert (bound.vault_id, bound.policy_id, bound.destination_vault_id) == (
        source.id,
        replication.id,
        replicas.id,
    )
    client.associate_vault_policy(
        AssociateVaultPolicyRequest(vault_id=source.id, body=VaultAssociate(policy_id=backup.id))
    )
    with pytest.raises(ClientRequestException) as refused:  # no destination: 9900
        other = sdk_vault(client, "sdk-policy-other", "backup", [])
        client.associate_vault_policy(
            AssociateVaultPolicyRequest(
                vault_id=other.id, body=VaultAssociate(policy_id=replication.id)
            )
        )
    assert (refused.value.status_code, refused.value.error_code) == (400, "BackupService.9900")

    listed = client.list_policies(ListPoliciesRequest(vault_id=source.id))
    assert listed.count == 2 and {p.id for p in listed.policies} == {backup.id, replication.id}
    only = client.list_policies(
        ListPoliciesRequest(operation_type="replication", vault_id=source.id)
    )
    assert [p.id for p in only.policies] == [replication.id]
    shown = client.show_policy(ShowPolicyRequest(policy_id=replication.id)).policy
    assert [(v.vault_id, v.destination_vault_id) for v in shown.associated_vaults] == [
        (source.id, replicas.id)
    ]
    assert shown.operation_definition.destination_region == "region2"
    by_policy = client.list_vault(ListVaultRequest(policy_id=backup.id))
    assert [v.id for v in by_policy.vaults] == [source.id]

    change = PolicyUpdate(
        name="sdk-weekly",
        enabled=False,
        operation_definition=PolicyoODCreate(max_backups=7),
        trigger=PolicyTriggerUpdateReq(
            properties=PolicyTriggerPropertiesUpdateReq(
                pattern=[WEEKENDS], start_window_minutes=120
            )
        ),
    )
    updated = client.update_policy(
        UpdatePolicyRequest(policy_id=backup.id, body=PolicyUpdateReq(policy=change))
    ).policy
    assert (updated.name, updated.enabled, updated.operation_definition.max_backups) == (
        "sdk-weekly",
        False,
        7,
    )
    assert updated.operation_definition.timezone == "UTC+08:00"  # merged, not replaced
    assert updated.trigger.properties.pattern == [WEEKENDS]
    assert updated.trigger.properties.start_window_minutes == 120
    assert updated.trigger.properties.start_time == backup.trigger.properties.start_time

    unbound = client.disassociate_vault_policy(
        DisassociateVaultPolicyRequest(
            vault_id=source.id, body=VaultDissociate(policy_id=backup.id)
        )
    ).dissociate_policy
    assert (unbound.vault_id, unbound.policy_id) == (source.id, backup.id)
    with pytest.raises(ClientRequestException) as not_bound:
        client.disassociate_vault_policy(
            DisassociateVaultPolicyRequest(
                vault_id=source.id, body=VaultDissociate(policy_id=backup.id)
            )
        )
    assert (not_bound.value.status_code, not_bound.value.error_code) == (404, "BackupService.6002")

    for policy in (backup, replication):
        client.delete_policy(DeletePolicyRequest(policy_id=policy.id))
        with pytest.raises(ClientRequestException) as gone:
            client.show_policy(ShowPolicyRequest(policy_id=policy.id))
        assert (gone.value.status_code, gone.value.error_code) == (404, "BackupService.6000")
    assert client.list_policies(ListPoliciesRequest(vault_id=source.id)).count == 0


def test_huawei_sdk_creates_a_vault_bound_to_its_backup_policy(site: Site) -> None:
    client = site.cbr("region1")
    policy = sdk_policy(client, "sdk-at-create", "backup", PolicyoODCreate(max_backups=1))
    billing = BillingCreate(
        consistent_level="crash_consistent", object_type="turbo", protect_type="backup", size=10
    )
    vault = VaultCreate(name="sdk-bound", billing=billing, resources=[], backup_policy_id=policy.id)
    made = client.create_vault(CreateVaultRequest(body=VaultCreateReq(vault=vault))).vault
    assert client.show_vault(ShowVaultRequest(vault_id=made.id)).vault.name == "sdk-bound"
    listed = client.list_policies(ListPoliciesRequest(vault_id=made.id))
    assert [p.id for p in listed.policies] == [policy.id]
    unknown = VaultCreate(name="sdk-x", billing=billing, resources=[], backup_policy_id="nope")
    with pytest.raises(ClientRequestException) as refused:
        client.create_vault(CreateVaultRequest(body=VaultCreateReq(vault=unknown)))
    assert (refused.value.status_code, refused.value.error_code) == (404, "BackupService.6000")
    assert client.list_vault(ListVaultRequest(name="sdk-x")).count == 0


def test_otcextensions_creates_binds_and_deletes_policies(site: Site) -> None:
    conn = otc_connection(site, "region1")
    made = conn.cbr.create_policy(
        name="osdk-daily",
        operation_type="backup",
        operation_definition={"max_backups": 4, "week_backups": 2, "timezone": "UTC+01:00"},
        trigger={"properties": {"pattern": [DAILY]}},
    )
    assert (made.operation_definition.max_backups, made.operation_definition.week_backups) == (4, 2)
    assert made.trigger.properties.pattern == [DAILY]
    replication = conn.cbr.create_policy(
        name="osdk-repl",
        operation_type="replication",
        operation_definition={
            "destination_region": "region2",
            "destination_project_id": site.projects["region2"],
        },
        trigger={"properties": {"pattern": [WEEKENDS]}},
    )
    vault = otc_vault(conn, "osdk-policy")

    # bind_policy and unbind_policy hand back the raw response (they never raise)
    assert conn.cbr.bind_policy(vault, made).json()["associate_policy"]["policy_id"] == made.id
    assert conn.cbr.get_vault(vault.id).backup_policy_id == made.id
    shown = conn.cbr.get_policy(made.id)
    assert [v.vault_id for v in shown.associated_vaults] == [vault.id]
    # otcextensions never sends destination_vault_id: a replication policy cannot bind
    refused = conn.cbr.bind_policy(vault, replication)
    assert refused.status_code == 400
    assert refused.json()["error_code"] == "BackupService.9900"
    assert "destination_vault_id" in refused.json()["error_msg"]

    assert {p.id for p in conn.cbr.policies()} >= {made.id, replication.id}
    assert [p.id for p in conn.cbr.policies(vault_id=vault.id)] == [made.id]
    assert [p.id for p in conn.cbr.policies(operation_type="replication")] == [replication.id]
    assert conn.cbr.find_policy("osdk-daily").id == made.id
    assert [v.id for v in conn.cbr.vaults(policy_id=made.id)] == [vault.id]

    renamed = conn.cbr.update_policy(made, name="osdk-renamed", enabled=False)
    assert (renamed.name, renamed.enabled) == ("osdk-renamed", False)

    assert conn.cbr.unbind_policy(vault, made).status_code == 200
    assert conn.cbr.get_vault(vault.id).backup_policy_id is None
    assert list(conn.cbr.policies(vault_id=vault.id)) == []
    not_bound = conn.cbr.unbind_policy(vault, made)
    assert (not_bound.status_code, not_bound.json()["error_code"]) == (404, "BackupService.6002")

    for policy in (made, replication):
        conn.cbr.delete_policy(policy, ignore_missing=False)
        with pytest.raises(os_exceptions.NotFoundException):
            conn.cbr.get_policy(policy.id)
    conn.cbr.delete_policy(made.id)  # ignore_missing: the 404 is tolerated
    conn.cbr.delete_vault(vault)


def cli_json(site: Site, workdir: Path, *args: str) -> Any:
    done = openstack_cli(site, workdir, "region1", *args, "-f", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_openstack_cbr_policy_commands(site: Site, tmp_path: Path) -> None:
    created = cli_json(
        site,
        tmp_path,
        "cbr",
        "policy",
        "create",
        "cli-policy",
        "--pattern",
        DAILY,
        "--pattern",
        WEEKENDS,
        "--max-backups",
        "6",
        "--day-backups",
        "3",
        "--timezone",
        "UTC+02:00",
    )
    assert (created["name"], created["operation_type"], created["enabled"]) == (
        "cli-policy",
        "backup",
        True,
    )
    assert (created["max_backups"], created["day_backups"], created["timezone"]) == (
        6,
        3,
        "UTC+02:00",
    )
    assert (created["schedule_pattern_1"], created["schedule_pattern_2"]) == (DAILY, WEEKENDS)
    policy_id = created["ID"]

    listed = cli_json(site, tmp_path, "cbr", "policy", "list")
    assert {row["ID"]: row["name"] for row in listed}[policy_id] == "cli-policy"
    backups_only = cli_json(site, tmp_path, "cbr", "policy", "list", "--operation-type", "backup")
    assert policy_id in [row["ID"] for row in backups_only]

    vault = otc_vault(otc_connection(site, "region1"), "cli-policy-vault")
    bound = cli_json(site, tmp_path, "cbr", "vault", "bind", vault.id, policy_id)
    assert (bound["vault_id"], bound["policy_id"]) == (vault.id, policy_id)
    vaults = cli_json(site, tmp_path, "cbr", "vault", "list")
    assert {row["ID"]: row["backup_policy_id"] for row in vaults}[vault.id] == policy_id
    unbound = openstack_cli(
        site, tmp_path, "region1", "cbr", "vault", "unbind", vault.id, policy_id
    )
    assert unbound.returncode == 0, unbound.stderr

    bad = openstack_cli(
        site, tmp_path, "region1", "cbr", "policy", "create", "bad", "--pattern", "FREQ=HOURLY"
    )
    assert bad.returncode != 0
    assert "BackupService.9900" in bad.stderr, bad.stderr

    shown = openstack_cli(
        site, tmp_path, "region1", "cbr", "policy", "show", policy_id, "-f", "json"
    )
    if shown.returncode != 0:
        assert_cli_find_policy_bug(shown.stderr)
    else:
        row = json.loads(shown.stdout)
        assert (row["ID"], row["max_backups"], row["start_time"]) == (
            policy_id,
            6,
            created["start_time"],
        )
    deleted = openstack_cli(site, tmp_path, "region1", "cbr", "policy", "delete", policy_id)
    if deleted.returncode != 0:
        assert_cli_find_policy_bug(deleted.stderr)
        otc_connection(site, "region1").cbr.delete_policy(policy_id, ignore_missing=False)
    listed = cli_json(site, tmp_path, "cbr", "policy", "list")
    assert policy_id not in [row["ID"] for row in listed]


def assert_cli_find_policy_bug(stderr: str) -> None:
    """otcextensions 0.34.8's `cbr policy show/update/delete` call
    `find_policy(policy_id=...)`, a keyword its proxy does not take: the command fails in
    the client before any request is sent. Nothing else may fail them."""
    assert stderr.strip() == "Proxy.find_policy() got an unexpected keyword argument 'policy_id'"
