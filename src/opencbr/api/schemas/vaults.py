"""Vault wire models (cbr-api.md §2.0, §2.1)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from opencbr.api.schemas.common import (
    BindRules,
    Description,
    Identifier,
    Name,
    QueryModel,
    RequestModel,
    ResponseModel,
    Tag,
    TagOut,
    wire_time,
)
from opencbr.db.status import VaultStatus
from opencbr.db.vaults import Vault, VaultResource
from opencbr.services import vaults as vault_service

GB = 1024**3


class ResourceExtraInfo(RequestModel):
    exclude_volumes: list[str] | None = None
    include_volumes: list[dict[str, Any]] | None = None


class ResourceCreate(RequestModel):
    id: Identifier
    type: str
    name: Annotated[str, Field(max_length=255)] | None = None
    extra_info: ResourceExtraInfo | None = None

    def binding(self) -> vault_service.ResourceBinding:
        extra = self.extra_info.model_dump(exclude_none=True) if self.extra_info else None
        return vault_service.ResourceBinding(self.id, self.type, self.name, extra)


class BillingCreate(RequestModel):
    consistent_level: Literal["crash_consistent", "app_consistent"] = "crash_consistent"
    object_type: Literal["server", "disk", "turbo"]
    protect_type: Literal["backup", "replication"] | None = None
    # otcextensions serialises protect_type under this name (a client bug we tolerate).
    operation_type: Literal["backup", "replication"] | None = None
    size: int
    cloud_type: Literal["public", "hybrid"] = "public"
    charging_mode: Literal["post_paid"] = "post_paid"
    is_multi_az: bool = False
    period_type: str | None = None
    period_num: int | None = None
    is_auto_renew: bool | None = None
    is_auto_pay: bool | None = None
    console_url: str | None = None

    @model_validator(mode="after")
    def _protect_type_given(self) -> BillingCreate:
        if self.protect_type is None and self.operation_type is None:
            raise ValueError("billing.protect_type is required")
        return self


class VaultCreate(RequestModel):
    name: Name
    billing: BillingCreate
    resources: Annotated[list[ResourceCreate], Field(max_length=256)] = []
    description: Description | None = None
    # Past the vault's limit is 6600, as for the tag API (services.vaults.MAX_TAGS); this
    # bound only keeps absurd lists out.
    tags: Annotated[list[Tag], Field(max_length=100)] | None = None
    enterprise_project_id: str = "0"
    auto_bind: bool = False
    bind_rules: BindRules | None = None
    auto_expand: bool = False
    smn_notify: bool = True
    threshold: Annotated[int, Field(ge=1, le=100)] = 80
    backup_name_prefix: Annotated[str, Field(max_length=32)] | None = None
    backup_policy_id: str | None = None
    sys_lock_source_service: Literal["SMB", ""] | None = None
    locked: bool = False
    availability_zone: Annotated[str, Field(max_length=32)] | None = None

    def spec(self, encrypted: bool = True) -> vault_service.VaultSpec:
        """The vault to create; `encrypted`: its region's `encryption` setting."""
        billing = self.billing
        return vault_service.VaultSpec(
            encrypted=encrypted,
            name=self.name,
            object_type=billing.object_type,
            protect_type=billing.protect_type or billing.operation_type or "backup",
            size_gb=billing.size,
            consistent_level=billing.consistent_level,
            cloud_type=billing.cloud_type,
            is_multi_az=billing.is_multi_az,
            resources=[resource.binding() for resource in self.resources],
            description=self.description,
            tags=[(tag.key, tag.value) for tag in self.tags or []],
            enterprise_project_id=self.enterprise_project_id,
            auto_bind=self.auto_bind,
            bind_rules=self.bind_rules.model_dump(exclude_none=True) if self.bind_rules else None,
            auto_expand=self.auto_expand,
            smn_notify=self.smn_notify,
            threshold=self.threshold,
            locked=self.locked,
            availability_zone=self.availability_zone,
            backup_name_prefix=self.backup_name_prefix,
            sys_lock_source_service=self.sys_lock_source_service or None,
        )


class VaultCreateBody(RequestModel):
    vault: VaultCreate


class BillingUpdate(RequestModel):
    consistent_level: Literal["crash_consistent", "app_consistent"] | None = None
    size: int | None = None


class VaultUpdate(RequestModel):
    name: Name | None = None
    billing: BillingUpdate | None = None
    auto_bind: bool | None = None
    bind_rules: BindRules | None = None
    auto_expand: bool | None = None
    smn_notify: bool | None = None
    threshold: Annotated[int, Field(ge=1, le=100)] | None = None
    locked: bool | None = None

    def changes(self) -> vault_service.VaultUpdate:
        billing = self.billing or BillingUpdate()
        return vault_service.VaultUpdate(
            name=self.name,
            size_gb=billing.size,
            consistent_level=billing.consistent_level,
            auto_bind=self.auto_bind,
            bind_rules=self.bind_rules.model_dump(exclude_none=True) if self.bind_rules else None,
            auto_expand=self.auto_expand,
            smn_notify=self.smn_notify,
            threshold=self.threshold,
            locked=self.locked,
        )


class VaultUpdateBody(RequestModel):
    vault: VaultUpdate


class AddResourcesBody(RequestModel):
    resources: Annotated[list[ResourceCreate], Field(min_length=1, max_length=256)]


class RemoveResourcesBody(RequestModel):
    resource_ids: Annotated[list[Identifier], Field(min_length=1, max_length=256)]


class MigrateResourcesBody(RequestModel):
    """migrateresources (`VaultMigrateResourceReq`): no `resource_ids` moves them all."""

    destination_vault_id: Identifier
    resource_ids: Annotated[list[Identifier], Field(min_length=1, max_length=256)] | None = None


class SetResourcesBody(RequestModel):
    resource_ids: Annotated[list[Identifier], Field(min_length=1, max_length=256)]
    action: Literal["suspend", "unsuspend"]


class ExpirationBody(RequestModel):
    """update-backup-expiration-time: no date means the backups never expire."""

    expect_expiration_date: Annotated[str, Field(max_length=10)] | None = None
    time_zone: Annotated[str, Field(max_length=9)]


# --- responses --------------------------------------------------------------------------


class MigrateResourcesResponse(ResponseModel):
    migrated_resources: list[str]


class VaultQuery(QueryModel):
    """GET /vaults. `resource_ids` is comma-separated; `resources_ids` is otcextensions'
    spelling of it."""

    name: str | None = None
    cloud_type: str | None = None
    protect_type: str | None = None
    object_type: str | None = None
    enterprise_project_id: str | None = None
    id: list[str] | None = None
    status: str | None = None
    resource_ids: str | None = None
    resources_ids: str | None = None
    policy_id: str | None = None

    def filters(self) -> vault_service.VaultFilter:
        raw_resources = self.resource_ids or self.resources_ids or ""
        return vault_service.VaultFilter(
            name=self.name,
            cloud_type=self.cloud_type,
            protect_type=self.protect_type,
            object_type=self.object_type,
            enterprise_project_id=self.enterprise_project_id,
            ids=tuple(self.id or ()),
            status=self.status,
            resource_ids=tuple(part for part in raw_resources.split(",") if part),
            policy_id=self.policy_id,
        )


class Billing(ResponseModel):
    allocated: int
    charging_mode: str
    cloud_type: str
    consistent_level: str
    object_type: str
    order_id: str | None
    product_id: str | None
    protect_type: str
    size: int
    spec_code: str
    status: str
    storage_unit: str | None
    used: int
    frozen_scene: str | None
    is_multi_az: bool


class ResourceResp(ResponseModel):
    id: str
    name: str
    type: str
    protect_status: str
    size: int
    backup_size: int
    backup_count: int
    auto_protect: bool
    extra_info: dict[str, Any]


class VaultOut(ResponseModel):
    id: str
    name: str
    project_id: str
    provider_id: str
    billing: Billing
    resources: list[ResourceResp]
    description: str | None
    tags: list[TagOut]
    enterprise_project_id: str
    auto_bind: bool
    bind_rules: dict[str, Any]
    user_id: str | None
    created_at: str | None
    updated_at: str | None
    auto_expand: bool
    smn_notify: bool
    threshold: int
    sys_lock_source_service: str | None
    locked: bool
    availability_zone: str | None
    backup_name_prefix: str | None
    demand_billing: bool
    cbc_delete_count: int
    frozen: bool
    # Not in the Huawei SDK's vault models; otcextensions' Vault has it (and `openstack cbr
    # vault list/show` print it): the vault's backup policy, null when it has none.
    backup_policy_id: str | None


class VaultResponse(ResponseModel):
    vault: VaultOut


class VaultListResponse(ResponseModel):
    vaults: list[VaultOut]
    count: int
    limit: int
    offset: int


class ExpirationResponse(ResponseModel):
    affected_backups_count: int
    new_expiration_day: str | None
    operation_log_id: str


class AddResourcesResponse(ResponseModel):
    add_resource_ids: list[str]


class RemoveResourcesResponse(ResponseModel):
    remove_resource_ids: list[str]


class SetResourcesResponse(ResponseModel):
    set_resource_ids: list[str]


def resource_out(binding: VaultResource, stats: dict[str, tuple[int, int]]) -> ResourceResp:
    protectable = binding.protectable
    count, size = stats.get(binding.resource_id, (0, 0))
    return ResourceResp(
        id=protectable.id,
        name=protectable.name,
        type=protectable.type,
        protect_status=binding.protect_status,
        size=-(-protectable.size_bytes // GB),
        backup_size=size,
        backup_count=count,
        auto_protect=binding.auto_protect,
        extra_info=binding.extra_info or {"exclude_volumes": []},
    )


def vault_out(
    vault: Vault,
    stats: dict[str, tuple[int, int]] | None = None,
    backup_policies: dict[str, str] | None = None,
) -> VaultOut:
    """`stats`: resource id -> (backup count, backup size in MB), from the backups layer;
    `backup_policies`: vault id -> its backup policy's id (services.policies)."""
    billing = Billing(
        allocated=vault_service.allocated_gb(vault),
        charging_mode=vault.charging_mode,
        cloud_type=vault.cloud_type,
        consistent_level=vault.consistent_level,
        object_type=vault.object_type,
        order_id=None,
        product_id=None,
        protect_type=vault.protect_type,
        size=vault.size_gb,
        spec_code=vault.spec_code,
        status=vault.status,
        storage_unit=None,
        used=vault_service.used_mb(vault),
        frozen_scene=None,
        is_multi_az=vault.is_multi_az,
    )
    return VaultOut(
        id=vault.id,
        name=vault.name,
        project_id=vault.project_id,
        provider_id=vault.provider_id,
        billing=billing,
        resources=[resource_out(binding, stats or {}) for binding in vault.resources],
        description=vault.description,
        tags=[TagOut(key=tag.key, value=tag.value) for tag in vault.tags],
        enterprise_project_id=vault.enterprise_project_id,
        auto_bind=vault.auto_bind,
        bind_rules=vault.bind_rules or {},
        user_id=vault.user_id,
        created_at=wire_time(vault.created_at),
        updated_at=wire_time(vault.updated_at),
        auto_expand=vault.auto_expand,
        smn_notify=vault.smn_notify,
        threshold=vault.threshold,
        sys_lock_source_service=vault.sys_lock_source_service,
        locked=vault.locked,
        availability_zone=vault.availability_zone,
        backup_name_prefix=vault.backup_name_prefix,
        demand_billing=False,
        cbc_delete_count=0,
        frozen=vault.status == VaultStatus.FROZEN,
        backup_policy_id=(backup_policies or {}).get(vault.id),
    )
