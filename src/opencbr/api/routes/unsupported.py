"""Operations of the official CBR SDK that only make sense on a public cloud.

Each answers, at its exact SDK method and path, 400 `BackupService.9900`
(errors.INVALID_PARAMETER) with a message naming the operation instead of the gateway's 404
`APIGW.0101`, so automation written for CBR meets a well-formed refusal. The caller is
authenticated first, as for every other call. The README's coverage table is checked against
`UNSUPPORTED`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends

from opencbr.api.deps import caller
from opencbr.api.routes.identity import any_caller
from opencbr.errors import INVALID_PARAMETER, CbrError


@dataclass(frozen=True)
class Unsupported:
    method: str
    path: str
    operation: str  # the Huawei SDK's method name (huaweicloudsdkcbr CbrClient)
    why: str  # the README's note


_ORDERS = "orders and billing belong to the public cloud's billing system"
_ORGANIZATION = "organization policies need the public cloud's organizations service"
_MIGRATION = "domain migration moves accounts between public-cloud billing domains"
_CROSS_ACCOUNT = "it serves cross-account replication, which opencbr does not offer"
_AGENTS = "agents are hybrid-cloud and file-backup clients opencbr does not have"
_SYNC = "backup sync imports backups from a hybrid-cloud gateway opencbr does not have"

UNSUPPORTED: tuple[Unsupported, ...] = (
    Unsupported("POST", "/v3/{project_id}/vaults/order", "create_post_paid_vault", _ORDERS),
    Unsupported(
        "POST", "/v3/{project_id}/vaults/change-charge-mode", "change_vault_charge_mode", _ORDERS
    ),
    Unsupported("POST", "/v3/{project_id}/orders/change", "change_order", _ORDERS),
    Unsupported("PUT", "/v3/{project_id}/orders/{order_id}", "update_order", _ORDERS),
    Unsupported(
        "POST",
        "/v3/{project_id}/organization-policies",
        "create_organization_policy",
        _ORGANIZATION,
    ),
    Unsupported(
        "GET",
        "/v3/{project_id}/organization-policies",
        "list_organization_policies",
        _ORGANIZATION,
    ),
    Unsupported(
        "GET",
        "/v3/{project_id}/organization-policies/{organization_policy_id}",
        "show_organization_policy",
        _ORGANIZATION,
    ),
    Unsupported(
        "PUT",
        "/v3/{project_id}/organization-policies/{organization_policy_id}",
        "update_organization_policy",
        _ORGANIZATION,
    ),
    Unsupported(
        "DELETE",
        "/v3/{project_id}/organization-policies/{organization_policy_id}",
        "delete_organization_policy",
        _ORGANIZATION,
    ),
    Unsupported(
        "GET",
        "/v3/{project_id}/organization-policies/{organization_policy_id}/policy-detail",
        "list_organization_policy_detail",
        _ORGANIZATION,
    ),
    Unsupported("POST", "/v3/migrates", "migrate_domain", _MIGRATION),
    Unsupported("GET", "/v3/migrates", "show_migrate_status", _MIGRATION),
    Unsupported("GET", "/v3/domain/{source_project_id}", "show_domain", _CROSS_ACCOUNT),
    Unsupported("POST", "/v3/{project_id}/agents", "register_agent", _AGENTS),
    Unsupported("GET", "/v3/{project_id}/agents", "list_agent", _AGENTS),
    Unsupported("GET", "/v3/{project_id}/agents/{agent_id}", "show_agent", _AGENTS),
    Unsupported("PUT", "/v3/{project_id}/agents/{agent_id}", "update_agent", _AGENTS),
    Unsupported("DELETE", "/v3/{project_id}/agents/{agent_id}", "unregister_agent", _AGENTS),
    Unsupported("POST", "/v3/{project_id}/agents/{agent_id}/add-path", "add_agent_path", _AGENTS),
    Unsupported(
        "POST", "/v3/{project_id}/agents/{agent_id}/remove-path", "remove_agent_path", _AGENTS
    ),
    Unsupported("POST", "/v3/{project_id}/agent/check", "check_agent", _AGENTS),
    Unsupported("POST", "/v3/{project_id}/backups/sync", "import_backup", _SYNC),
    Unsupported("POST", "/v3/{project_id}/checkpoints/sync", "import_checkpoint", _SYNC),
)

# Included after every other router: a route here never takes a path a real route serves.
router = APIRouter(tags=["not supported"])


def _refusal(entry: Unsupported) -> Callable[[], Any]:
    def refuse() -> Any:
        raise CbrError(
            INVALID_PARAMETER, f"The operation {entry.operation} is not supported by opencbr."
        )

    return refuse


for _entry in UNSUPPORTED:
    # A project's calls check the caller against that project (403 for another's), as
    # every CBR route does; the project-less ones only that the caller is someone.
    _who = caller if "{project_id}" in _entry.path else any_caller
    router.add_api_route(
        _entry.path,
        _refusal(_entry),
        methods=[_entry.method],
        name=_entry.operation,
        dependencies=[Depends(_who)],
        include_in_schema=True,
        summary=f"{_entry.operation}: not supported ({_entry.why})",
    )
