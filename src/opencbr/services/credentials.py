"""Permanent access keys (AK/SK): create, list, update, delete, and what signature checks need.

A key belongs to a user, not to a project: a request signed with it acts in the project named
by the request, with the role its owner holds there (within the key's bound, below).

Secrets are stored encrypted with Fernet (AES-128-CBC + HMAC-SHA256). The server has to
recompute each request's HMAC, so a one-way hash will not do; the encryption key lives in
the file `secret_key_file` (default ``<data_dir>/secret.key``, mode 0600, created on first
use), outside the database, so a copy of the database alone reveals no usable secret. Every
process sharing one database needs the same key file; losing it makes every stored secret
useless (create new keys). The first start seals a constant with the key into the database
(`service_values`); `key_problem` compares it, so a process with another key refuses to
start instead of refusing every signed request.

Who may manage whose keys. ``caller=None`` is the operator (``opencbr admin``): anyone's.
Through the API a user manages its own keys; a caller whose token carries the ``admin`` role
may also manage the keys of a user who holds roles only in projects where the caller is
admin. Keys a caller may not manage look exactly like unknown keys (404).

Where a key may act. A key minted by its own user or by the operator acts wherever its user
holds a role. A key an admin mints for another user is bound to the projects the admin
administered at that moment (``Credential.project_scoped``): the user may later gain roles
elsewhere, but this key never acts there, so minting a key for someone never lets an admin
do more than it could when minting. A signed request outside that bound is refused exactly
like one signed with an unknown key (401), so the answer does not tell why.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr.db.credentials import CREDENTIAL_STATUSES, Credential, CredentialProject
from opencbr.db.identity import Project, RoleAssignment, User
from opencbr.db.service_state import KEY_CHECK, ServiceValue, insert_if_absent
from opencbr.db.session import Database
from opencbr.errors import (
    CREDENTIAL_NOT_FOUND,
    FORBIDDEN_ROLE,
    INVALID_PARAMETER,
    UNAUTHORIZED,
    USER_NOT_FOUND,
    WRONG_PROJECT,
    CbrError,
)
from opencbr.services import keys
from opencbr.services.identity import AuthContext, find_user, roles_in
from opencbr.settings import Settings

# IAM publishes no codes for these; opencbr's own, in IAM's namespace.

KEY_CHECK_PLAIN = "opencbr secret-key check"
ACCESS_ALPHABET = string.ascii_uppercase + string.digits
SECRET_ALPHABET = string.ascii_letters + string.digits
ACCESS_LENGTH = 20  # like IAM's AKs; 103 bits
SECRET_LENGTH = 40  # like IAM's SKs; 238 bits
DESCRIPTION_LENGTH = 255
SIGNATURE_FAILED = "Incorrect IAM authentication information: verify aksk signature fail"


class SecretBox:
    """Seals and opens access-key secrets with the key in ``path``.

    The key file is created on first use, atomically: written to a temporary file and
    hard-linked into place, so concurrent first users (the server and an ``opencbr admin``
    command) end up with the same key. Stateless after construction, so thread-safe.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fernet = Fernet(_load_or_create_key(path))

    def seal(self, access: str, secret: str) -> str:
        return self._fernet.encrypt(f"{access}\n{secret}".encode()).decode("ascii")

    def open(self, access: str, ciphertext: str) -> str | None:
        """The secret, or None if the ciphertext is not this key's or not this AK's."""
        try:
            plain = self._fernet.decrypt(ciphertext.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            return None
        sealed_access, _, secret = plain.partition("\n")
        return secret if sealed_access == access else None

    def key_check(self) -> str:
        """The value that proves, later, that a key is this one."""
        return self._fernet.encrypt(KEY_CHECK_PLAIN.encode()).decode("ascii")

    def passes(self, check: str) -> bool:
        try:
            return self._fernet.decrypt(check.encode("ascii")) == KEY_CHECK_PLAIN.encode()
        except (InvalidToken, UnicodeError):
            return False


def secret_box(settings: Settings) -> SecretBox:
    return SecretBox(settings.key_file)


def key_problem(db: Database, settings: Settings) -> str | None:
    """Why this process's secret key cannot serve the database's stored secrets (one line,
    naming the file, never the key), or None. The first process records the key check;
    every later one compares (a database from before the check: one stored secret)."""
    path = settings.key_file
    remedy = "give every process of this database the same secret_key_file"
    mismatch = (
        f"the secret key file {path} is not the key this database's access-key secrets "
        f"were sealed with: {remedy}"
    )
    with db.reading() as session:
        check = session.get(ServiceValue, KEY_CHECK)
    if check is not None and not path.exists():
        # Creating a new key here would only hide the mistake.
        return f"no secret key file at {path}, but this database expects one: {remedy}"
    try:
        box = SecretBox(path)
    except (ValueError, OSError) as exc:  # not a Fernet key, unreadable
        reason = exc.strerror if isinstance(exc, OSError) else "not a key"
        return f"cannot use the secret key file {path}: {reason}"
    if check is None:
        if not _opens_a_stored_secret(db, box):
            return mismatch
        with db.transaction() as session:
            insert_if_absent(session, ServiceValue, name=KEY_CHECK, value=box.key_check())
            check = session.get(ServiceValue, KEY_CHECK)
    return None if check is not None and box.passes(check.value) else mismatch


def _opens_a_stored_secret(db: Database, box: SecretBox) -> bool:
    """True when no secret is stored yet, or the key opens one of them."""
    with db.reading() as session:
        stored = session.execute(
            select(Credential.access, Credential.secret_ciphertext).limit(1)
        ).first()
    return stored is None or box.open(stored.access, stored.secret_ciphertext) is not None


def _load_or_create_key(path: Path) -> bytes:
    try:
        keys.keep_private(path)
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret-key-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process got there first
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return path.read_bytes().strip()


@dataclass(frozen=True)
class NewCredential:
    """A freshly created key: the only time its secret is handed out."""

    credential: Credential
    secret: str


# --- managing keys -------------------------------------------------------------------------


def create(
    db: Database,
    box: SecretBox,
    caller: AuthContext | None,
    user: str,
    description: str = "",
) -> NewCredential:
    """A new active key for ``user`` (id, or name for the operator). Not idempotent."""
    _check_description(description)
    with db.transaction() as session:
        _check_may_manage(session, caller, user)
        owner = find_user(session, user) if caller is None else session.get(User, user)
        if owner is None:
            raise CbrError(USER_NOT_FOUND, f"Could not find user {user!r}.")
        access = _unused_access(session)
        secret = "".join(secrets.choice(SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
        bound = _minting_bound(session, caller, owner.id)
        credential = Credential(
            access=access,
            user_id=owner.id,
            secret_ciphertext=box.seal(access, secret),
            status="active",
            description=description,
            project_scoped=bound is not None,
        )
        session.add(credential)
        session.flush()
        session.add_all(
            CredentialProject(access=access, project_id=project) for project in sorted(bound or ())
        )
        session.flush()
        return NewCredential(credential, secret)


def _minting_bound(session: Session, caller: AuthContext | None, owner_id: str) -> set[str] | None:
    """The projects a new key may act in: None (no bound) for the operator or the key's
    own user; for an admin minting for someone else, the projects that admin administers."""
    if caller is None or caller.user_id == owner_id:
        return None
    return _administered_by(session, caller.user_id)


def list_for_user(db: Database, caller: AuthContext | None, user: str) -> list[Credential]:
    """The user's keys (id, or name for the operator), oldest first."""
    with db.transaction() as session:
        _check_may_manage(session, caller, user)
        owner = find_user(session, user) if caller is None else session.get(User, user)
        if owner is None:
            raise CbrError(USER_NOT_FOUND, f"Could not find user {user!r}.")
        query = (
            select(Credential)
            .where(Credential.user_id == owner.id)
            .order_by(Credential.created_at, Credential.access)
        )
        return list(session.scalars(query))


def get(db: Database, caller: AuthContext | None, access: str) -> Credential:
    with db.transaction() as session:
        return _get(session, caller, access)


def update(
    db: Database,
    caller: AuthContext | None,
    access: str,
    status: str | None = None,
    description: str | None = None,
) -> Credential:
    """Activate or deactivate a key, or change its description. Idempotent."""
    if status is not None and status not in CREDENTIAL_STATUSES:
        raise CbrError(INVALID_PARAMETER, f"status must be one of {', '.join(CREDENTIAL_STATUSES)}")
    if description is not None:
        _check_description(description)
    with db.transaction() as session:
        credential = _get(session, caller, access)
        if status is not None:
            credential.status = status
        if description is not None:
            credential.description = description
        return credential


def delete(db: Database, caller: AuthContext | None, access: str) -> None:
    """Delete a key; requests signed with it fail from the moment this commits."""
    with db.transaction() as session:
        session.delete(_get(session, caller, access))


def _get(session: Session, caller: AuthContext | None, access: str) -> Credential:
    credential = session.get(Credential, access)
    if credential is None or not _may_manage(session, caller, credential.user_id):
        raise CbrError(CREDENTIAL_NOT_FOUND, f"Could not find access key {access!r}.")
    return credential


def _check_description(description: str) -> None:
    if len(description) > DESCRIPTION_LENGTH:
        raise CbrError(INVALID_PARAMETER, f"description is longer than {DESCRIPTION_LENGTH}")


def _unused_access(session: Session) -> str:
    while True:  # a collision has odds of 1 in 2**103 per existing key
        access = "".join(secrets.choice(ACCESS_ALPHABET) for _ in range(ACCESS_LENGTH))
        if session.get(Credential, access) is None:
            return access


def _check_may_manage(session: Session, caller: AuthContext | None, user_id: str) -> None:
    if not _may_manage(session, caller, user_id):
        raise CbrError(FORBIDDEN_ROLE, "You may only manage your own access keys.")


def _may_manage(session: Session, caller: AuthContext | None, user_id: str) -> bool:
    if caller is None or caller.user_id == user_id:
        return True
    if "admin" not in caller.roles:
        return False
    grants = session.scalars(select(RoleAssignment).where(RoleAssignment.user_id == user_id))
    administered = _administered_by(session, caller.user_id)
    return all(grant.project_id in administered for grant in grants)


def _administered_by(session: Session, user_id: str) -> set[str]:
    query = select(RoleAssignment.project_id).where(
        RoleAssignment.user_id == user_id, RoleAssignment.role == "admin"
    )
    return set(session.scalars(query))


# --- signed requests -----------------------------------------------------------------------


def find_secret(db: Database, box: SecretBox, access: str) -> str | None:
    """The SK of an active key of an enabled user; None otherwise (the request is refused)."""
    with db.transaction() as session:
        credential = session.get(Credential, access)
        if credential is None or credential.status != "active":
            return None
        owner = session.get(User, credential.user_id)
        if owner is None or not owner.enabled:
            return None
        return box.open(access, credential.secret_ciphertext)


def context_for_key(db: Database, access: str, project_id: str | None) -> AuthContext:
    """Who a verified key acts for, in ``project_id``.

    Raises UNAUTHORIZED, worded as for an unknown key, if the key or its user stopped being
    usable since it was verified, if ``project_id`` is disabled, or if the key is bound to
    projects that do not include ``project_id``; WRONG_PROJECT (403) if its owner holds no
    role in ``project_id``. With ``project_id=None`` the context names the user only (project
    fields empty, no roles): enough for calls that are not about a project, such as listing
    the user's projects (bounded keys see only their bound).
    """
    refused = CbrError(UNAUTHORIZED, f"{SIGNATURE_FAILED}: unknown access key {access!r}")
    with db.transaction() as session:
        credential = session.get(Credential, access)
        owner = session.get(User, credential.user_id) if credential else None
        if credential is None or credential.status != "active":
            raise refused
        if owner is None or not owner.enabled:
            raise refused
        bound = _bound_of(session, credential)
        if project_id is None:
            return AuthContext(
                owner.id, owner.name, "", "", "", roles=(), method="aksk", key_projects=bound
            )
        if bound is not None and project_id not in bound:
            raise refused
        project = session.get(Project, project_id)
        if project is not None and not project.enabled:
            raise refused
        roles = roles_in(session, owner.id, project_id)
        if project is None or not roles:
            raise CbrError(WRONG_PROJECT, "The access key's user has no role in this project.")
        return AuthContext(
            user_id=owner.id,
            user_name=owner.name,
            project_id=project.id,
            project_name=project.name,
            region=project.region,
            roles=roles,
            method="aksk",
            key_projects=bound,
        )


def _bound_of(session: Session, credential: Credential) -> frozenset[str] | None:
    """The projects a bounded key may act in; None for a key without a bound."""
    if not credential.project_scoped:
        return None
    query = select(CredentialProject.project_id).where(
        CredentialProject.access == credential.access
    )
    return frozenset(session.scalars(query))
