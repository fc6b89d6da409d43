"""Policy wire models (cbr-api.md §2.1.9-2.1.10, §2.5; the SDK's Policy*, PolicyoODCreate,
VaultAssociate, VaultDissociate, VaultPolicyResp).

Ranges are checked here (400 `BackupService.9900`); how fields go together (timezone with
the calendar counts, a replication policy's destination) is the service's to check, as an
update merges its fields into the stored ones first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from opencbr.api.schemas.common import (
    Identifier,
    Name,
    QueryModel,
    RequestModel,
    ResponseModel,
)
from opencbr.api.schemas.replication import RegionName
from opencbr.db.policies import Policy
from opencbr.services import policies as policy_service
from opencbr.services.policies import BindingView


def _minus_one_or(low: int, high: int) -> Callable[[int], int]:
    """A check: an int from `low` to `high`, or -1 ("off" or, for days, the last one)."""

    def check(value: int) -> int:
        if value != -1 and not low <= value <= high:
            raise ValueError(f"must be -1 or from {low} to {high}")
        return value

    return check


Weekday = Literal["MO", "TU", "WE", "TH", "FR", "SA", "SU"]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=16)]
DayOfMonth = Annotated[int, AfterValidator(_minus_one_or(1, 28))]
WeeksKept = Annotated[int, AfterValidator(_minus_one_or(1, 5200))]
MonthsKept = Annotated[int, AfterValidator(_minus_one_or(1, 1200))]
YearsKept = Annotated[int, AfterValidator(_minus_one_or(1, 100))]
CalendarCount = Annotated[int, Field(ge=0, le=100)]
Pattern = Annotated[str, StringConstraints(max_length=512)]


class WeeklyRetentionRules(RequestModel):
    days_of_week: Annotated[list[Weekday], Field(max_length=7)] | None = None
    retention_duration_periods: WeeksKept | None = None


class MonthlyRetentionRules(RequestModel):
    retention_type: ShortText | None = None
    retention_weeks: Annotated[list[ShortText], Field(max_length=6)] | None = None
    days_of_week: Annotated[list[Weekday], Field(max_length=7)] | None = None
    days_of_month: Annotated[list[DayOfMonth], Field(max_length=29)] | None = None
    retention_duration_periods: MonthsKept | None = None


class YearlyRetentionRules(RequestModel):
    retention_type: ShortText | None = None
    retention_months: Annotated[list[ShortText], Field(max_length=12)] | None = None
    retention_weeks: Annotated[list[ShortText], Field(max_length=6)] | None = None
    days_of_month: Annotated[list[DayOfMonth], Field(max_length=29)] | None = None
    days_of_week: Annotated[list[Weekday], Field(max_length=7)] | None = None
    retention_duration_periods: YearsKept | None = None


class AdvancedRetentionRules(RequestModel):
    """Stored and echoed; opencbr's retention applies the counts and durations above."""

    weekly_retention_rules: WeeklyRetentionRules | None = None
    monthly_retention_rules: MonthlyRetentionRules | None = None
    yearly_retention_rules: YearlyRetentionRules | None = None


class OperationDefinition(RequestModel):
    """PolicyoODCreate: every field optional."""

    max_backups: Annotated[int, Field(ge=-1, le=99999)] | None = None
    retention_duration_days: Annotated[int, Field(ge=-1, le=99999)] | None = None
    day_backups: CalendarCount | None = None
    week_backups: CalendarCount | None = None
    month_backups: CalendarCount | None = None
    year_backups: CalendarCount | None = None
    timezone: Annotated[str, StringConstraints(max_length=32)] | None = None
    full_backup_interval: Annotated[int, Field(ge=-1, le=100)] | None = None
    destination_region: RegionName | None = None
    destination_project_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    enable_acceleration: bool | None = None
    cross_account_urn: Annotated[str, StringConstraints(max_length=255)] | None = None
    advanced_retention_rules: AdvancedRetentionRules | None = None

    def given(self) -> dict[str, Any]:
        """The fields the request named, as stored (nulls included: an update removes
        those)."""
        return self.model_dump(exclude_unset=True, exclude_none=False)


class TriggerProperties(RequestModel):
    pattern: list[Pattern]
    start_window_minutes: Annotated[int, Field(ge=60, le=480)] | None = None


class Trigger(RequestModel):
    properties: TriggerProperties


class PolicyCreate(RequestModel):
    name: Name
    # Any text: an unknown type is CBR's 6117, not a malformed request.
    operation_type: Annotated[str, StringConstraints(max_length=64)]
    operation_definition: OperationDefinition = OperationDefinition()
    trigger: Trigger
    enabled: bool = True

    def spec(self) -> policy_service.PolicySpec:
        properties = self.trigger.properties
        definition = self.operation_definition.model_dump(exclude_none=True)
        return policy_service.PolicySpec(
            name=self.name,
            operation_type=self.operation_type,
            operation_definition=definition,
            patterns=tuple(properties.pattern),
            start_window_minutes=properties.start_window_minutes,
            enabled=self.enabled,
        )


class PolicyCreateBody(RequestModel):
    policy: PolicyCreate


class PolicyUpdate(RequestModel):
    """Partial: what is absent (or null) keeps its value; `operation_type` may only repeat
    the policy's own."""

    name: Name | None = None
    enabled: bool | None = None
    operation_type: Annotated[str, StringConstraints(max_length=64)] | None = None
    operation_definition: OperationDefinition | None = None
    trigger: Trigger | None = None

    def changes(self) -> policy_service.PolicyChanges:
        trigger = None
        if self.trigger is not None:
            properties = self.trigger.properties
            trigger = policy_service.TriggerChange(
                patterns=tuple(properties.pattern),
                start_window_minutes=properties.start_window_minutes,
                sets_window="start_window_minutes" in properties.model_fields_set,
            )
        definition = self.operation_definition
        return policy_service.PolicyChanges(
            name=self.name,
            enabled=self.enabled,
            operation_type=self.operation_type,
            operation_definition=definition.given() if definition is not None else None,
            trigger=trigger,
        )


class PolicyUpdateBody(RequestModel):
    policy: PolicyUpdate


class PolicyQuery(QueryModel):
    """GET /policies (paging parameters come separately)."""

    operation_type: Annotated[str, StringConstraints(max_length=64)] | None = None
    vault_id: Annotated[str, StringConstraints(max_length=64)] | None = None

    def filters(self) -> policy_service.PolicyFilter:
        return policy_service.PolicyFilter(self.operation_type, self.vault_id)


class AssociateBody(RequestModel):
    """VaultAssociate: exactly one of `policy_id` and `add_policy_ids`."""

    policy_id: Identifier | None = None
    add_policy_ids: Annotated[list[Identifier], Field(min_length=1, max_length=32)] | None = None
    destination_vault_id: Identifier | None = None

    @model_validator(mode="after")
    def _one_way_to_name_policies(self) -> AssociateBody:
        if (self.policy_id is None) == (self.add_policy_ids is None):
            raise ValueError("give exactly one of policy_id and add_policy_ids")
        return self

    def policy_ids(self) -> list[str]:
        return [self.policy_id] if self.policy_id is not None else list(self.add_policy_ids or [])


class DissociateBody(RequestModel):
    policy_id: Identifier


# --- responses --------------------------------------------------------------------------


class OperationDefinitionOut(ResponseModel):
    """As stored; counts never set answer as CBR's example does (-1 off, 0 none kept)."""

    max_backups: int
    retention_duration_days: int
    day_backups: int
    week_backups: int
    month_backups: int
    year_backups: int
    timezone: str | None
    full_backup_interval: int | None
    destination_region: str | None
    destination_project_id: str | None
    enable_acceleration: bool | None
    advanced_retention_rules: dict[str, Any] | None


class TriggerPropertiesOut(ResponseModel):
    pattern: list[str]
    start_time: str  # the schedule's anchor, "YYYY-MM-DD HH:MM:SS" UTC
    start_window_minutes: int | None


class TriggerOut(ResponseModel):
    id: str
    name: str
    type: str
    properties: TriggerPropertiesOut


class AssociatedVault(ResponseModel):
    vault_id: str
    destination_vault_id: str | None


class PolicyOut(ResponseModel):
    id: str
    name: str
    enabled: bool
    operation_type: str
    operation_definition: OperationDefinitionOut
    trigger: TriggerOut
    associated_vaults: list[AssociatedVault]
    policy_type: str


class PolicyResponse(ResponseModel):
    policy: PolicyOut


class PolicyListResponse(ResponseModel):
    policies: list[PolicyOut]
    count: int


class VaultPolicy(ResponseModel):
    vault_id: str
    policy_id: str
    destination_vault_id: str | None


class AssociateResponse(ResponseModel):
    associate_policy: VaultPolicy


class DissociateResponse(ResponseModel):
    dissociate_policy: VaultPolicy


def definition_out(stored: dict[str, Any]) -> OperationDefinitionOut:
    return OperationDefinitionOut(
        max_backups=stored.get("max_backups", -1),
        retention_duration_days=stored.get("retention_duration_days", -1),
        day_backups=stored.get("day_backups", 0),
        week_backups=stored.get("week_backups", 0),
        month_backups=stored.get("month_backups", 0),
        year_backups=stored.get("year_backups", 0),
        timezone=stored.get("timezone"),
        full_backup_interval=stored.get("full_backup_interval"),
        destination_region=stored.get("destination_region"),
        destination_project_id=stored.get("destination_project_id"),
        enable_acceleration=stored.get("enable_acceleration"),
        advanced_retention_rules=stored.get("advanced_retention_rules"),
    )


def policy_out(policy: Policy) -> PolicyOut:
    return PolicyOut(
        id=policy.id,
        name=policy.name,
        enabled=policy.enabled,
        operation_type=policy.operation_type,
        operation_definition=definition_out(policy.operation_definition),
        trigger=TriggerOut(
            id=policy.trigger_id,
            name="default",
            type="time",
            properties=TriggerPropertiesOut(
                pattern=list(policy.patterns),
                start_time=policy.start_time.strftime("%Y-%m-%d %H:%M:%S"),
                start_window_minutes=policy.start_window_minutes,
            ),
        ),
        associated_vaults=[
            AssociatedVault(vault_id=b.vault_id, destination_vault_id=b.destination_vault_id)
            for b in policy.bindings
        ],
        policy_type="custom_policy",
    )


def vault_policy(view: BindingView) -> VaultPolicy:
    return VaultPolicy(
        vault_id=view.vault_id,
        policy_id=view.policy_id,
        destination_vault_id=view.destination_vault_id,
    )
