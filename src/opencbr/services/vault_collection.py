"""Operations on a project's vaults as a whole: changing settings of all of them at once
(vaults/batch-update) and listing the vaults of the caller's other projects (vaults/external).
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import select, update

from opencbr.db.identity import Project
from opencbr.db.paging import Page, PageRequest
from opencbr.db.session import Database
from opencbr.db.vaults import Vault
from opencbr.errors import INVALID_PARAMETER, CbrError
from opencbr.services import vaults
from opencbr.services.identity import AuthContext, roles_in

MIN_THRESHOLD = 1
MAX_THRESHOLD = 100


def batch_update(
    db: Database, ctx: AuthContext, smn_notify: bool | None, threshold: int | None
) -> list[str]:
    """Set `smn_notify` and/or `threshold` on every vault of the project; their ids, oldest
    first. opencbr stores and reports both but sends no notification (it has no SMN)."""
    changes: dict[str, object] = {}
    if smn_notify is not None:
        changes["smn_notify"] = smn_notify
    if threshold is not None:
        if not MIN_THRESHOLD <= threshold <= MAX_THRESHOLD:
            raise CbrError(
                INVALID_PARAMETER, f"threshold must be {MIN_THRESHOLD} to {MAX_THRESHOLD}"
            )
        changes["threshold"] = threshold
    if not changes:
        raise CbrError(INVALID_PARAMETER, "vault must set smn_notify or threshold")
    with db.transaction() as session:
        ids = list(
            session.scalars(
                select(Vault.id)
                .where(Vault.project_id == ctx.project_id)
                .order_by(Vault.created_at, Vault.id)
            )
        )
        if ids:
            session.execute(
                update(Vault)
                .where(Vault.id.in_(ids))
                .values(**changes)
                .execution_options(synchronize_session=False)
            )
        return ids


@dataclasses.dataclass(frozen=True)
class ExternalQuery:
    project_id: str
    region: str
    vault_id: str | None = None  # when given, the other filters do not apply (as in CBR)
    protect_type: str | None = None
    object_type: str | None = None
    cloud_type: str | None = None


def list_external(
    db: Database, ctx: AuthContext, query: ExternalQuery, page: PageRequest
) -> Page[Vault]:
    """Vaults of another project of the caller's user, in the region named with it.

    A project the user holds no role in (or its key may not act in), an unknown one and a
    project of another region all get the same refusal: the answer says nothing about
    projects that are not the caller's.
    """
    external = _external_context(db, ctx, query.project_id, query.region)
    if query.vault_id is not None:
        filters = vaults.VaultFilter(ids=(query.vault_id,))
    else:
        filters = vaults.VaultFilter(
            protect_type=query.protect_type,
            object_type=query.object_type,
            cloud_type=query.cloud_type,
        )
    return vaults.list_page(db, external, filters, page)


def _external_context(db: Database, ctx: AuthContext, project_id: str, region: str) -> AuthContext:
    refused = CbrError(
        INVALID_PARAMETER,
        "external_project_id is not a project of yours in the region region_id",
    )
    if ctx.key_projects is not None and project_id not in ctx.key_projects:
        raise refused
    with db.reading() as session:
        project = session.get(Project, project_id)
        roles = roles_in(session, ctx.user_id, project_id) if project is not None else ()
        if project is None or not project.enabled or project.region != region or not roles:
            raise refused
        return dataclasses.replace(
            ctx,
            project_id=project.id,
            project_name=project.name,
            region=project.region,
            roles=roles,
        )
