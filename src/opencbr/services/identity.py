"""Identity: users, projects, roles, password authentication and tokens (Keystone v3 subset).

Tokens are 256-bit random strings; only their SHA-256 is stored. Passwords use argon2.

Token rules (Keystone's). A token is valid while it is neither expired nor revoked, its user
and project are enabled and its user holds a role in its project. A token made from another
(``methods: ["token"]``, a rescope) expires when that parent expires, so rescoping never
extends a lifetime, and revoking a token revokes every token made from it, transitively.
A token may be validated or revoked by its own user, or by a token carrying the ``admin``
role in the project the token is scoped to; anyone else gets 403 (404 when it is not valid).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.orm import Session

from opencbr import clock
from opencbr.db.backups import Checkpoint, OperationLog
from opencbr.db.credentials import Credential, CredentialProject
from opencbr.db.identity import ROLES, WRITING_ROLES, Domain, Project, RoleAssignment, Token, User
from opencbr.db.session import Database
from opencbr.db.vaults import Protectable, Vault
from opencbr.errors import FORBIDDEN_ROLE, UNAUTHORIZED, CbrError
from opencbr.settings import Settings

DEFAULT_DOMAIN = "Default"


class IdentityError(Exception):
    """An operator command that cannot be carried out (unknown name, bad role...)."""


@dataclass(frozen=True)
class AuthContext:
    """Who is calling, and in which project (hence which region)."""

    user_id: str
    user_name: str
    project_id: str
    project_name: str
    region: str
    roles: tuple[str, ...]
    method: str  # "token" or "aksk"
    # For an access key bound to the projects its minter administered: those projects.
    key_projects: frozenset[str] | None = None

    @property
    def can_write(self) -> bool:
        return bool(WRITING_ROLES.intersection(self.roles))


@cache
def _hasher(cost: str = "production") -> PasswordHasher:
    """argon2id at the configured cost (``Settings.password_hash_cost``).

    "test" keeps argon2id and the hash's shape but at argon2's minimum time and memory, so
    test suites exercise the same code without paying ~0.1 s of CPU per hash.
    """
    if cost == "test":
        return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)
    return PasswordHasher()


def hash_password(settings: Settings, password: str) -> str:
    return _hasher(settings.password_hash_cost).hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    # Verification reads the cost from the stored hash, whatever the hasher's own cost.
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- operator commands -------------------------------------------------------------------


def ensure_domain(session: Session, name: str = DEFAULT_DOMAIN) -> Domain:
    domain = session.scalar(select(Domain).where(Domain.name == name))
    if domain is None:
        domain = Domain(name=name)
        session.add(domain)
        session.flush()
    return domain


def find_user(session: Session, name_or_id: str) -> User | None:
    return session.get(User, name_or_id) or session.scalar(
        select(User).where(User.name == name_or_id)
    )


def find_project(session: Session, name_or_id: str) -> Project | None:
    return session.get(Project, name_or_id) or session.scalar(
        select(Project).where(Project.name == name_or_id)
    )


def create_user(db: Database, settings: Settings, name: str, password: str) -> User:
    _require_password(password)
    with db.transaction() as session:
        domain = ensure_domain(session)
        if session.scalar(select(User).where(User.name == name, User.domain_id == domain.id)):
            raise IdentityError(f"user {name!r} already exists")
        user = User(name=name, domain_id=domain.id, password_hash=hash_password(settings, password))
        session.add(user)
        return user


def create_project(db: Database, settings: Settings, name: str, region: str) -> Project:
    if settings.region(region) is None:
        raise IdentityError(f"region {region!r} is not configured")
    with db.transaction() as session:
        domain = ensure_domain(session)
        if session.scalar(select(Project).where(Project.name == name)):
            raise IdentityError(f"project {name!r} already exists")
        project = Project(name=name, domain_id=domain.id, region=region)
        session.add(project)
        return project


def grant_role(db: Database, user: str, project: str, role: str) -> RoleAssignment:
    if role not in ROLES:
        raise IdentityError(f"role must be one of {', '.join(ROLES)}")
    with db.transaction() as session:
        found_user = find_user(session, user)
        found_project = find_project(session, project)
        if found_user is None:
            raise IdentityError(f"no user {user!r}")
        if found_project is None:
            raise IdentityError(f"no project {project!r}")
        grant = session.get(RoleAssignment, (found_user.id, found_project.id))
        if grant is None:
            grant = RoleAssignment(user_id=found_user.id, project_id=found_project.id, role=role)
            session.add(grant)
        grant.role = role
        return grant


@dataclass(frozen=True)
class BootstrapResult:
    user_id: str
    user_name: str
    domain_id: str
    projects: dict[str, str]  # region -> project id
    created_user: bool


def bootstrap(db: Database, settings: Settings, user: str, password: str) -> BootstrapResult:
    """Create domain, user, one project per region (named after it) and admin grants.

    Idempotent: existing rows are kept. An existing user's password is left alone (the
    operator may have changed it since; `set_password` changes it): ``created_user`` says
    whether ``password`` was used.
    """
    with db.transaction() as session:
        domain = ensure_domain(session)
        account = session.scalar(select(User).where(User.name == user))
        created = account is None
        if account is None:
            _require_password(password)
            account = User(
                name=user, domain_id=domain.id, password_hash=hash_password(settings, password)
            )
            session.add(account)
            session.flush()
        projects = {}
        for region in settings.regions:
            project = _ensure_region_project(session, domain, region.name)
            projects[region.name] = project.id
            if session.get(RoleAssignment, (account.id, project.id)) is None:
                session.add(RoleAssignment(user_id=account.id, project_id=project.id, role="admin"))
        return BootstrapResult(account.id, account.name, domain.id, projects, created)


def _ensure_region_project(session: Session, domain: Domain, region: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == region))
    if project is None:
        project = Project(name=region, domain_id=domain.id, region=region)
        session.add(project)
        session.flush()
    return project


# --- operator lifecycle: list, show, disable, enable, delete ------------------------------


@dataclass(frozen=True)
class Grant:
    user_id: str
    user_name: str
    project_id: str
    project_name: str
    role: str


@dataclass(frozen=True)
class UserView:
    id: str
    name: str
    domain: str
    enabled: bool
    created_at: datetime


@dataclass(frozen=True)
class UserDetail:
    user: UserView
    roles: list[Grant]
    access_keys: list[str]
    live_tokens: int


@dataclass(frozen=True)
class ProjectView:
    id: str
    name: str
    region: str
    domain: str
    enabled: bool
    created_at: datetime
    vaults: int


def _user_view(user: User) -> UserView:
    return UserView(user.id, user.name, user.domain.name, user.enabled, user.created_at)


def _project_view(session: Session, project: Project) -> ProjectView:
    vaults = session.scalar(
        select(func.count()).select_from(Vault).where(Vault.project_id == project.id)
    )
    return ProjectView(
        project.id,
        project.name,
        project.region,
        project.domain.name,
        project.enabled,
        project.created_at,
        vaults or 0,
    )


def _existing_user(session: Session, name_or_id: str) -> User:
    user = find_user(session, name_or_id)
    if user is None:
        raise IdentityError(f"no user {name_or_id!r}")
    return user


def _existing_project(session: Session, name_or_id: str) -> Project:
    project = find_project(session, name_or_id)
    if project is None:
        raise IdentityError(f"no project {name_or_id!r}")
    return project


def _require_password(password: str) -> None:
    if not password:
        raise IdentityError("the password must not be empty")


def user_exists(db: Database, name: str) -> bool:
    with db.reading() as session:
        return find_user(session, name) is not None


def list_users(db: Database) -> list[UserView]:
    with db.reading() as session:
        return [_user_view(user) for user in session.scalars(select(User).order_by(User.name))]


def show_user(db: Database, name_or_id: str) -> UserDetail:
    with db.reading() as session:
        user = _existing_user(session, name_or_id)
        keys = select(Credential.access).where(Credential.user_id == user.id)
        live = (
            select(func.count())
            .select_from(Token)
            .where(
                Token.user_id == user.id,
                Token.revoked_at.is_(None),
                Token.expires_at > clock.now(),
            )
        )
        return UserDetail(
            _user_view(user),
            _grants(session, user_id=user.id),
            list(session.scalars(keys.order_by(Credential.access))),
            session.scalar(live) or 0,
        )


def set_user_enabled(db: Database, name_or_id: str, enabled: bool) -> UserView:
    """Enable or disable a user. Disabling revokes its tokens (as Keystone does): they stay
    refused after the user is enabled again; its access keys work again then."""
    with db.transaction() as session:
        user = _existing_user(session, name_or_id)
        user.enabled = enabled
        if not enabled:
            _revoke_where(session, Token.user_id == user.id)
        return _user_view(user)


def set_password(db: Database, settings: Settings, name_or_id: str, password: str) -> UserView:
    """A new password; the user's tokens are revoked (the old password may be known)."""
    _require_password(password)
    password_hash = hash_password(settings, password)
    with db.transaction() as session:
        user = _existing_user(session, name_or_id)
        user.password_hash = password_hash
        _revoke_where(session, Token.user_id == user.id)
        return _user_view(user)


def delete_user(db: Database, name_or_id: str) -> UserView:
    """Delete a user with its role grants, tokens and access keys."""
    with db.transaction() as session:
        user = _existing_user(session, name_or_id)
        view = _user_view(user)
        keys = select(Credential.access).where(Credential.user_id == user.id)
        session.execute(delete(CredentialProject).where(CredentialProject.access.in_(keys)))
        session.execute(delete(Credential).where(Credential.user_id == user.id))
        session.execute(delete(Token).where(Token.user_id == user.id))
        session.execute(delete(RoleAssignment).where(RoleAssignment.user_id == user.id))
        session.delete(user)
        return view


def list_grants(db: Database, user: str | None = None, project: str | None = None) -> list[Grant]:
    with db.reading() as session:
        user_id = None if user is None else _existing_user(session, user).id
        project_id = None if project is None else _existing_project(session, project).id
        return _grants(session, user_id=user_id, project_id=project_id)


def _grants(
    session: Session, user_id: str | None = None, project_id: str | None = None
) -> list[Grant]:
    query = (
        select(User.id, User.name, Project.id, Project.name, RoleAssignment.role)
        .join(User, User.id == RoleAssignment.user_id)
        .join(Project, Project.id == RoleAssignment.project_id)
        .order_by(User.name, Project.name)
    )
    if user_id is not None:
        query = query.where(RoleAssignment.user_id == user_id)
    if project_id is not None:
        query = query.where(RoleAssignment.project_id == project_id)
    return [Grant(*row) for row in session.execute(query)]


def revoke_role(db: Database, user: str, project: str) -> Grant:
    """Take the user's role in the project away; its tokens there are refused at once."""
    with db.transaction() as session:
        found_user = _existing_user(session, user)
        found_project = _existing_project(session, project)
        grant = session.get(RoleAssignment, (found_user.id, found_project.id))
        if grant is None:
            raise IdentityError(f"user {user!r} has no role in project {project!r}")
        revoked = Grant(
            found_user.id, found_user.name, found_project.id, found_project.name, grant.role
        )
        session.delete(grant)
        _revoke_where(session, Token.user_id == found_user.id, Token.project_id == found_project.id)
        return revoked


def list_project_views(db: Database) -> list[ProjectView]:
    with db.reading() as session:
        projects = session.scalars(select(Project).order_by(Project.name))
        return [_project_view(session, project) for project in projects]


def set_project_enabled(db: Database, name_or_id: str, enabled: bool) -> ProjectView:
    """Enable or disable a project. Disabling revokes the tokens scoped to it."""
    with db.transaction() as session:
        project = _existing_project(session, name_or_id)
        project.enabled = enabled
        if not enabled:
            _revoke_where(session, Token.project_id == project.id)
        return _project_view(session, project)


def delete_project(db: Database, name_or_id: str) -> ProjectView:
    """Delete a project that holds no vault, with its grants, tokens, registered resources
    and operation history. A project with vaults is refused: its data would be orphaned."""
    with db.transaction() as session:
        project = _existing_project(session, name_or_id)
        view = _project_view(session, project)
        if view.vaults:
            raise IdentityError(
                f"project {project.name!r} still has {view.vaults} vault(s): delete them first"
            )
        for model in (CredentialProject, Token, RoleAssignment, OperationLog, Checkpoint):
            session.execute(delete(model).where(model.project_id == project.id))
        for resource in session.scalars(
            select(Protectable).where(Protectable.project_id == project.id)
        ):
            session.delete(resource)  # with its volumes
        session.delete(project)
        return view


def _revoke_where(session: Session, *conditions: ColumnElement[bool]) -> None:
    session.execute(
        update(Token).where(*conditions, Token.revoked_at.is_(None)).values(revoked_at=clock.now())
    )


# --- tokens ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PasswordAuth:
    """What a Keystone password request names; the API layer fills it from the body."""

    password: str
    user_id: str | None = None
    user_name: str | None = None
    user_domain: str | None = None  # name or id
    project_id: str | None = None
    project_name: str | None = None
    project_domain: str | None = None  # name or id


@dataclass(frozen=True)
class IssuedToken:
    token: str
    row: Token
    roles: tuple[str, ...]


def _domain_matches(domain: Domain, name_or_id: str | None) -> bool:
    return name_or_id is None or name_or_id in (domain.id, domain.name)


def _resolve_user(session: Session, auth: PasswordAuth) -> User:
    if auth.user_id:
        user = session.get(User, auth.user_id)
    else:
        user = session.scalar(select(User).where(User.name == (auth.user_name or "")))
    if user is None or not user.enabled or not _domain_matches(user.domain, auth.user_domain):
        raise CbrError(UNAUTHORIZED, "The request you have made requires authentication.")
    if not password_matches(user.password_hash, auth.password):
        raise CbrError(UNAUTHORIZED, "The request you have made requires authentication.")
    return user


def _resolve_project(session: Session, auth: PasswordAuth) -> Project:
    if auth.project_id:
        project = session.get(Project, auth.project_id)
    else:
        project = session.scalar(select(Project).where(Project.name == (auth.project_name or "")))
    if project is None or not _domain_matches(project.domain, auth.project_domain):
        raise CbrError(UNAUTHORIZED, "The request you have made requires authentication.")
    return project


def issue_token(db: Database, settings: Settings, auth: PasswordAuth) -> IssuedToken:
    """Check the password and scope; a user without a role in the project gets 401."""
    with db.transaction() as session:
        user = _resolve_user(session, auth)
        project = _resolve_project(session, auth)
        grant = session.get(RoleAssignment, (user.id, project.id))
        if grant is None or not project.enabled:
            raise CbrError(UNAUTHORIZED, "The request you have made requires authentication.")
        return _new_token(session, settings, user, project, grant.role)


def rescope_token(
    db: Database,
    settings: Settings,
    parent_token: str,
    project_id: str | None,
    project_name: str | None,
) -> IssuedToken:
    """A new token for the parent's user, scoped to a project it holds a role in (the
    parent's project when none is named), expiring with the parent."""
    with db.transaction() as session:
        # Locked so that a concurrent revocation of the parent either sees this child or
        # is seen by it (PostgreSQL; SQLite transactions are serialised anyway).
        parent, _roles = _live_token(session, parent_token, lock=True)
        named = project_id is not None or project_name is not None
        project = (
            _resolve_project(
                session, PasswordAuth(password="", project_id=project_id, project_name=project_name)
            )
            if named
            else parent.project
        )
        grant = session.get(RoleAssignment, (parent.user_id, project.id))
        if grant is None or not project.enabled:
            raise CbrError(UNAUTHORIZED, "The request you have made requires authentication.")
        return _new_token(session, settings, parent.user, project, grant.role, parent)


def _new_token(
    session: Session,
    settings: Settings,
    user: User,
    project: Project,
    role: str,
    parent: Token | None = None,
) -> IssuedToken:
    token = secrets.token_urlsafe(32)
    issued = clock.now()
    lifetime = issued + timedelta(seconds=settings.token_ttl_seconds)
    row = Token(
        digest=token_digest(token),
        user_id=user.id,
        project_id=project.id,
        audit_id=secrets.token_urlsafe(16)[:22],
        issued_at=issued,
        expires_at=lifetime if parent is None else min(lifetime, parent.expires_at),
        parent_digest=None if parent is None else parent.digest,
        user=user,
        project=project,
    )
    session.add(row)
    session.flush()
    return IssuedToken(token, row, (role,))


def projects_of_user(
    db: Database, user_id: str, name: str | None, within: frozenset[str] | None = None
) -> list[Project]:
    """The projects the user holds a role in (only those in ``within`` when given)."""
    with db.reading() as session:
        query = (
            select(Project)
            .join(RoleAssignment, RoleAssignment.project_id == Project.id)
            .where(RoleAssignment.user_id == user_id)
            .order_by(Project.name)
        )
        if name is not None:
            query = query.where(Project.name == name)
        if within is not None:
            query = query.where(Project.id.in_(within))
        return list(session.scalars(query))


def check_token(db: Database, token: str) -> tuple[Token, tuple[str, ...]]:
    """The token's row and roles; CbrError(UNAUTHORIZED) unless the token is valid."""
    with db.reading() as session:
        return _live_token(session, token)


def _live_token(session: Session, token: str, lock: bool = False) -> tuple[Token, tuple[str, ...]]:
    digest = token_digest(token)
    if lock:  # the row alone: PostgreSQL cannot lock the outer joins that load user/project
        session.execute(select(Token.digest).where(Token.digest == digest).with_for_update())
    row = session.get(Token, digest)
    # A disabled user or project reads like an unknown token: the answer does not say why.
    if row is None or row.revoked_at is not None or not row.user.enabled:
        raise CbrError(UNAUTHORIZED, "Incorrect IAM authentication information: decrypt token fail")
    if not row.project.enabled:
        raise CbrError(UNAUTHORIZED, "Incorrect IAM authentication information: decrypt token fail")
    if row.expires_at <= clock.now():
        expired = row.expires_at.isoformat()
        raise CbrError(
            UNAUTHORIZED,
            f"Incorrect IAM authentication information: token expires, expires_at: {expired}",
        )
    grant = session.get(RoleAssignment, (row.user_id, row.project_id))
    if grant is None:
        raise CbrError(UNAUTHORIZED, "Incorrect IAM authentication information: no role")
    return row, (grant.role,)


def context_for_token(db: Database, token: str) -> AuthContext:
    row, roles = check_token(db, token)
    return AuthContext(
        user_id=row.user_id,
        user_name=row.user.name,
        project_id=row.project_id,
        project_name=row.project.name,
        region=row.project.region,
        roles=roles,
        method="token",
    )


def subject_token(
    db: Database, caller_token: str, subject: str, action: str
) -> tuple[Token, tuple[str, ...]]:
    """The subject of a validate, check or revoke call (``action``), if the caller may see it.

    401 unless the caller's own token is valid; 404 (UNAUTHORIZED's code) unless the subject is;
    403 unless the subject is a token of the caller's user or the caller's token carries the
    admin role in the subject's project. Keystone answers in the same order.
    """
    caller = context_for_token(db, caller_token)
    try:
        row, roles = check_token(db, subject)
    except CbrError:
        raise CbrError(UNAUTHORIZED.with_status(404), "The token could not be found.") from None
    own = row.user_id == caller.user_id
    administers = caller.project_id == row.project_id and "admin" in caller.roles
    if not (own or administers):
        raise CbrError(
            FORBIDDEN_ROLE,
            f"You are not authorized to perform the requested action: identity:{action}.",
        )
    return row, roles


def revoke_token(db: Database, token: str) -> None:
    """Revoke the token and every token rescoped from it, directly or transitively."""
    with db.transaction() as session:
        now = clock.now()
        generation = [token_digest(token)]
        while generation:
            session.execute(
                update(Token)
                .where(Token.digest.in_(generation), Token.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            children = select(Token.digest).where(Token.parent_digest.in_(generation))
            generation = list(session.scalars(children))


def roles_in(session: Session, user_id: str, project_id: str) -> tuple[str, ...]:
    grant = session.get(RoleAssignment, (user_id, project_id))
    return (grant.role,) if grant else ()


def list_projects(db: Database, name: str | None = None) -> list[Project]:
    with db.reading() as session:
        query = select(Project).order_by(Project.name)
        if name is not None:
            query = query.where(Project.name == name)
        return list(session.scalars(query))
