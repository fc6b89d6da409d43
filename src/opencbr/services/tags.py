"""Vault tags: one vault's tags (set, delete, batch), the project's tags, and the query of a
project's vaults by tags (`vault/resource_instances/action`, the TMS-style filter).

Keys and values are checked at the wire (charset, lengths); here live the rules that need
the vault: at most `vaults.MAX_TAGS` tags, a key once per vault, a missing key on delete.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, not_, or_, select, true
from sqlalchemy.orm import Session

from opencbr.db.paging import Page, PageRequest, fetch_page
from opencbr.db.session import Database
from opencbr.db.vaults import Vault, VaultTag
from opencbr.errors import INVALID_PARAMETER, TAG_KEY_NOT_FOUND, CbrError
from opencbr.services import vaults
from opencbr.services.identity import AuthContext


def list_for_vault(db: Database, ctx: AuthContext, vault_id: str) -> list[VaultTag]:
    with db.reading() as session:
        return list(vaults.get_in_session(session, ctx, vault_id).tags)


def set_tag(db: Database, ctx: AuthContext, vault_id: str, key: str, value: str) -> None:
    """Add the tag, or give an existing key its new value (CBR overwrites)."""
    set_tags(db, ctx, vault_id, [(key, value)])


def set_tags(
    db: Database, ctx: AuthContext, vault_id: str, pairs: Sequence[tuple[str, str]]
) -> None:
    """Add or overwrite several tags at once; all or none."""
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise CbrError(INVALID_PARAMETER, "tags must not repeat a key")
    with db.transaction() as session:
        vault = _locked_vault(session, ctx, vault_id)
        present = {tag.key: tag for tag in vault.tags}
        added = [key for key in keys if key not in present]
        vaults.check_tag_count(len(present) + len(added))
        for key, value in pairs:
            if key in present:
                present[key].value = value
            else:
                vault.tags.append(VaultTag(key=key, value=value))


def delete_tag(db: Database, ctx: AuthContext, vault_id: str, key: str) -> None:
    with db.transaction() as session:
        vault = _locked_vault(session, ctx, vault_id)
        found = next((tag for tag in vault.tags if tag.key == key), None)
        if found is None:
            raise CbrError(TAG_KEY_NOT_FOUND, f"The vault has no tag with the key {key}.")
        vault.tags.remove(found)


def delete_tags(
    db: Database, ctx: AuthContext, vault_id: str, pairs: Sequence[tuple[str, str | None]]
) -> None:
    """Remove each named tag; a tag the vault lacks, or whose value differs from the one
    named, is no error (CBR's batch delete succeeds for them)."""
    with db.transaction() as session:
        vault = _locked_vault(session, ctx, vault_id)
        doomed = {
            tag.key
            for tag in vault.tags
            for key, value in pairs
            if tag.key == key and (value is None or tag.value == value)
        }
        for tag in [tag for tag in vault.tags if tag.key in doomed]:
            vault.tags.remove(tag)


def _locked_vault(session: Session, ctx: AuthContext, vault_id: str) -> Vault:
    """The vault, its row locked: two concurrent tag writes to one vault take turns, so
    neither can pass the tag limit on a count the other is changing."""
    session.execute(
        select(Vault.id)
        .where(Vault.id == vault_id, Vault.project_id == ctx.project_id)
        .with_for_update()
    )
    return vaults.get_in_session(session, ctx, vault_id)


def project_tags(db: Database, ctx: AuthContext) -> list[tuple[str, list[str]]]:
    """Every key used on the project's vaults, with the distinct values it has, sorted."""
    query = (
        select(VaultTag.key, VaultTag.value)
        .join(Vault, Vault.id == VaultTag.vault_id)
        .where(Vault.project_id == ctx.project_id)
        .group_by(VaultTag.key, VaultTag.value)
        .order_by(VaultTag.key, VaultTag.value)
    )
    found: dict[str, list[str]] = {}
    with db.reading() as session:
        for key, value in session.execute(query):
            found.setdefault(key, []).append(value)
    return list(found.items())


# --- resource_instances -----------------------------------------------------------------


@dataclass(frozen=True)
class TagFilter:
    """One key and the values that match it: any value when `values` is empty; a value
    starting with `*` matches every value containing the rest."""

    key: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class InstanceQuery:
    tags: tuple[TagFilter, ...] = ()  # all of them
    tags_any: tuple[TagFilter, ...] = ()  # at least one
    not_tags: tuple[TagFilter, ...] = ()  # not all of them
    not_tags_any: tuple[TagFilter, ...] = ()  # none of them
    without_any_tag: bool = False  # no tag at all; the four lists above are then ignored
    name_contains: str | None = None  # matches resource_name, non-empty value
    name_equals: str | None = None  # matches resource_name, empty value (exact)
    cloud_type: str | None = None
    object_type: str | None = None
    page: PageRequest = field(default_factory=PageRequest)


def query_vaults(db: Database, ctx: AuthContext, query: InstanceQuery) -> Page[Vault]:
    """The project's vaults the query selects, newest first, one page of them (the count
    is over every match)."""
    in_project = Vault.project_id == ctx.project_id
    selected = select(Vault).where(in_project, *_conditions(query))
    with db.reading() as session:
        return fetch_page(session, selected, Vault.created_at, Vault.id, query.page, in_project)


def _conditions(query: InstanceQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.without_any_tag:
        conditions.append(~exists().where(VaultTag.vault_id == Vault.id))
    else:
        if query.tags:
            conditions.append(and_(*_each(query.tags)))
        if query.tags_any:
            conditions.append(or_(*_each(query.tags_any)))
        if query.not_tags:
            conditions.append(not_(and_(*_each(query.not_tags))))
        if query.not_tags_any:
            conditions.append(not_(or_(*_each(query.not_tags_any))))
    if query.name_equals is not None:
        conditions.append(Vault.name == query.name_equals)
    if query.name_contains is not None:
        conditions.append(Vault.name.contains(query.name_contains, autoescape=True))
    if query.cloud_type is not None:
        conditions.append(Vault.cloud_type == query.cloud_type)
    if query.object_type is not None:
        conditions.append(Vault.object_type == query.object_type)
    return conditions


def _each(filters: Iterable[TagFilter]) -> list[ColumnElement[bool]]:
    return [Vault.id.in_(_vaults_carrying(tag)) for tag in filters]


def _vaults_carrying(tag: TagFilter) -> Select[Any]:
    """Ids of the vaults with the key and one of the values (answered from the key/value
    index, not by reading every vault)."""
    matches: list[ColumnElement[bool]] = []
    exact = [value for value in tag.values if not value.startswith("*")]
    if exact:
        matches.append(VaultTag.value.in_(exact))
    for value in tag.values:
        if value.startswith("*"):
            matches.append(VaultTag.value.contains(value[1:], autoescape=True))
    value_matches = or_(*matches) if matches else true()
    return select(VaultTag.vault_id).where(VaultTag.key == tag.key, value_matches)
