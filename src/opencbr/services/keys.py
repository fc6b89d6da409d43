"""Keys of encryption at rest: the master key file, the wrapped data keys and naming
secret in the database (`db/keys.py`), the per-process keyring that unwraps them, and
rotation.

The master key (a key-encryption key) lives only in `master_key_file` (32 random bytes,
base64, created 0600 on first start like the secret key file); it is never stored in
the database and never logged. It wraps, with AES-256-GCM and the row's purpose in the
associated data, each project's data keys and the deployment's naming secret. A master
key is known by its id: 16 hex of a BLAKE3 key derivation from it (reveals nothing).

Rotation of the master key (`rotate_master`) never touches stored data: every row gets
a second wrapping by the new key beside the old (`next_wrapped`, resumable: rows that
have one are skipped), then ONE transaction switches every row to it. A crash before the
switch leaves the old key in force (run it again, or `abandon_rotation`); after it, the
new one. While a rotation is staged, a process holding either key can unwrap.

A new data key for a project (`new_data_key`) is used for new chunks; older chunks name
their key id in their header and stay readable.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path

import blake3
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from opencbr import data_dir
from opencbr.db.base import utcnow
from opencbr.db.keys import NAMING_KEY_ID, DataKey
from opencbr.db.service_state import insert_if_absent
from opencbr.db.session import Database
from opencbr.storage.sealing import KEY_SIZE, NONCE_SIZE, Sealing, UnknownKeyError

log = structlog.get_logger(__name__)

# How long a process keeps using a project's current data key before it looks for a
# newer one (`opencbr admin key rotate --data-key` takes effect within this time).
CURRENT_KEY_SECONDS = 30.0


class KeyringError(Exception):
    """The master key cannot serve this database (one line, naming the file, never a key)."""


class MasterKey:
    """The key-encryption key, read from its file. Immutable, so thread-safe."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("not a 256-bit key")
        self._cipher = AESGCM(key)
        self.id = blake3.blake3(key, derive_key_context="opencbr master key id").hexdigest()[:16]

    @classmethod
    def load(cls, path: Path, *, create: bool) -> MasterKey:
        """The master key in `path`; with `create`, a new one is written there first when
        the file does not exist (atomically: concurrent first starts agree)."""
        if create and not path.exists():
            _create_key_file(path)
        try:
            keep_private(path)
            text = path.read_bytes().strip()
        except FileNotFoundError:
            raise KeyringError(f"no master key file at {path}") from None
        except OSError as exc:
            raise KeyringError(f"cannot read the master key file {path}: {exc.strerror}") from None
        try:
            return cls(base64.b64decode(text, validate=True))
        except (ValueError, binascii.Error):
            raise KeyringError(f"the master key file {path} holds no 256-bit key") from None

    def wrap(self, key: bytes, purpose: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._cipher.encrypt(nonce, key, purpose)

    def unwrap(self, wrapped: bytes, purpose: bytes) -> bytes | None:
        try:
            return self._cipher.decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], purpose)
        except InvalidTag:
            return None


def keep_private(path: Path) -> None:
    """A key file copied under umask 022 is readable by every local user: take that back,
    or say once that it cannot be (a read-only mount), without refusing to start."""
    reason = data_dir.make_key_file_private(path)
    if reason is not None:
        log.warning("key file readable by other users", file=str(path), reason=reason)


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".master-key-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.b64encode(os.urandom(KEY_SIZE)) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process got there first
            os.link(temporary, path)
    finally:
        os.unlink(temporary)


def _purpose(row: DataKey) -> bytes:
    return purpose(row.id, row.project_id)


def purpose(key_id: int, project_id: str | None) -> bytes:
    """What a wrapping is bound to: a naming secret cannot pass for a project's key, nor
    one project's key for another's."""
    return f"opencbr data key {key_id} project {project_id or '-'}".encode()


def _unwrap(master: MasterKey, row: DataKey) -> bytes | None:
    if row.master_id == master.id:
        return master.unwrap(row.wrapped, _purpose(row))
    if row.next_master_id == master.id and row.next_wrapped is not None:
        return master.unwrap(row.next_wrapped, _purpose(row))  # a rotation is staged
    return None


class Keyring:
    """This process's unwrapped keys: what reads sealed objects (`storage.sealing.ChunkKeys`)
    and what writers seal with (`sealing`).

    Lifecycle: `load()` at start (creates the naming secret on a new database, and raises
    KeyringError when the master key cannot unwrap the stored keys); keys created later by
    any process are loaded on first use. Thread-safe (one lock around the caches).
    """

    def __init__(self, db: Database, master_key_file: Path) -> None:
        self._db = db
        self._path = master_key_file
        self._master: MasterKey | None = None
        self._naming: bytes | None = None
        self._ciphers: dict[int, AESGCM] = {}
        self._current: dict[str, tuple[float, int]] = {}  # project -> (looked up at, key id)
        self._lock = threading.RLock()

    def load(self) -> None:
        with self._lock:
            self._master = MasterKey.load(self._path, create=True)
            self._ensure_naming_key()
            self._refresh()

    @property
    def naming_key(self) -> bytes:
        with self._lock:
            if self._naming is None:
                self.load()
            assert self._naming is not None
            return self._naming

    def cipher(self, key_id: int) -> AESGCM:
        with self._lock:
            found = self._ciphers.get(key_id)
            if found is None:
                self._refresh()  # made by another process since
                found = self._ciphers.get(key_id)
            if found is None:
                raise UnknownKeyError(f"no data key {key_id}")
            return found

    def sealing(self, project_id: str) -> Sealing:
        """How to seal for `project_id`: its current (newest) data key, made on first use."""
        with self._lock:
            naming = self.naming_key
            cached = self._current.get(project_id)
            if cached is None or time.monotonic() - cached[0] > CURRENT_KEY_SECONDS:
                key_id = self._current_key_id(project_id) or self._new_key(project_id)
                self._current[project_id] = cached = (time.monotonic(), key_id)
            return Sealing(cached[1], self.cipher(cached[1]), naming)

    def _current_key_id(self, project_id: str) -> int | None:
        with self._db.reading() as session:
            return session.scalar(
                select(DataKey.id)
                .where(DataKey.project_id == project_id)
                .order_by(DataKey.id.desc())
                .limit(1)
            )

    def _new_key(self, project_id: str) -> int:
        # Two processes may each make one at once: both are kept and readable; the newer
        # becomes current for everyone.
        return new_data_key(self._db, self._master_key(), project_id)

    def _master_key(self) -> MasterKey:
        if self._master is None:
            self.load()
        assert self._master is not None
        return self._master

    def _ensure_naming_key(self) -> None:
        master = self._master_key()
        with self._db.transaction() as session:
            if session.get(DataKey, NAMING_KEY_ID) is None:  # a new database
                wrapped = master.wrap(os.urandom(KEY_SIZE), purpose(NAMING_KEY_ID, None))
                insert_if_absent(
                    session,
                    DataKey,
                    id=NAMING_KEY_ID,
                    wrapped=wrapped,
                    master_id=master.id,
                    created_at=utcnow(),
                )

    def _refresh(self) -> None:
        """Unwrap every key not loaded yet; KeyringError when one does not unwrap."""
        master = self._master_key()
        with self._db.reading() as session:
            rows = list(session.scalars(select(DataKey).where(DataKey.id.not_in(self._ciphers))))
        for row in rows:
            key = _unwrap(master, row)
            if key is None:
                raise KeyringError(
                    f"the master key file {self._path} does not unwrap this database's data "
                    "keys: give every process the master key they were wrapped with"
                )
            if row.id == NAMING_KEY_ID:
                self._naming = key
            else:
                self._ciphers[row.id] = AESGCM(key)


def key_problem(keyring: Keyring) -> str | None:
    """Why this process cannot use the database's keys (one line), or None; loads them."""
    try:
        keyring.load()
    except KeyringError as exc:
        return str(exc)
    return None


def new_data_key(db: Database, master: MasterKey, project_id: str) -> int:
    """Add a data key for `project_id` (its current one from now on); return its id.

    Raises KeyringError when `master` is no longer the deployment's master key (a rotation
    switched since this process loaded it): a key it wrapped would unwrap for no process
    started with the new file, and keep every process from starting.
    """
    with db.transaction() as session:
        _check_master_in_force(session, master)
        row = DataKey(project_id=project_id, wrapped=b"", master_id=master.id)
        session.add(row)
        session.flush()  # the id is in the wrapping's purpose
        row.wrapped = master.wrap(os.urandom(KEY_SIZE), _purpose(row))
        log.info("data key created", project_id=project_id, key_id=row.id)
        return row.id


def _check_master_in_force(session: Session, master: MasterKey) -> None:
    """Lock the naming secret's row, the keyring's guard (the switch of a rotation locks it
    first too), and check that `master` wraps the keys, or is staged to."""
    guard = session.get(DataKey, NAMING_KEY_ID, with_for_update=True)
    if guard is not None and master.id not in (guard.master_id, guard.next_master_id):
        raise KeyringError(
            "the master key was rotated since this process started: restart it with the "
            "new master key file"
        )


def rotate_master(db: Database, old: MasterKey, new: MasterKey) -> int:
    """Re-wrap every key under `new`; return how many rows. Resumable and crash-safe (see
    the module docstring). Raises KeyringError when `old` does not unwrap a row."""
    stage_rotation(db, old, new)
    return switch_rotation(db, new)


def stage_rotation(db: Database, old: MasterKey, new: MasterKey) -> None:
    """Give every row its wrapping by `new` beside the old one, one short transaction per
    row (a crash keeps what was staged; rows staged already are skipped)."""
    with db.reading() as session:
        ids = list(session.scalars(select(DataKey.id).order_by(DataKey.id)))
    for key_id in ids:
        with db.transaction() as session:
            row = session.get(DataKey, key_id, with_for_update=True)
            if row is None or row.master_id == new.id or row.next_master_id == new.id:
                continue
            key = _unwrap(old, row)
            if key is None:
                raise KeyringError(f"the current master key does not unwrap data key {key_id}")
            row.next_wrapped, row.next_master_id = new.wrap(key, _purpose(row)), new.id


def switch_rotation(db: Database, new: MasterKey) -> int:
    """Make the staged wrappings by `new` the only ones, every row in one transaction;
    return how many rows. Refused (nothing changes) while a row has none."""
    with db.transaction() as session:
        # The guard first: a data key being made commits before this reads the rows (and
        # is then refused below if it was not staged); one made after sees the new key.
        session.get(DataKey, NAMING_KEY_ID, with_for_update=True)
        rows = list(session.scalars(select(DataKey).with_for_update()))
        if any(r.master_id != new.id and r.next_master_id != new.id for r in rows):
            raise KeyringError("a data key appeared during the rotation: run it again")
        for row in rows:
            if row.master_id != new.id:
                row.wrapped, row.master_id = row.next_wrapped or b"", new.id
            row.next_wrapped, row.next_master_id = None, None
        return len(rows)


def abandon_rotation(db: Database) -> None:
    """Drop a staged rotation that was not switched (the old master key stays in force)."""
    with db.transaction() as session:
        session.execute(update(DataKey).values(next_wrapped=None, next_master_id=None))
