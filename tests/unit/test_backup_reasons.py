"""How a backup names a storage fault and caps its warnings (pure functions)."""

from __future__ import annotations

import errno
import os

import pytest

from opencbr.services.backup_runs import capped_warnings, storage_reason
from opencbr.storage.store import PermanentStorageError, StorageError, TransientStorageError


def _raised(kind: type[StorageError], code: int) -> StorageError:
    try:
        try:
            raise OSError(code, os.strerror(code), "/srv/secret/store/chunks/ab/abcd")
        except OSError as exc:
            raise kind(f"write temp file: {exc}") from exc
    except StorageError as error:
        return error


@pytest.mark.parametrize(
    ("code", "fault"),
    [
        (errno.ENOTDIR, "storage path is not a directory"),
        (errno.ENOENT, "storage path missing"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
        (errno.ENOSPC, "no space left on device"),
        (errno.ELOOP, "too many levels of symbolic links"),
    ],
)
def test_permanent_storage_faults_name_their_kind_and_no_path(code: int, fault: str) -> None:
    reason = storage_reason(_raised(PermanentStorageError, code))
    assert reason == f"region storage unusable: {fault}"


def test_a_transient_fault_that_outlived_the_retries_is_not_called_unusable() -> None:
    reason = storage_reason(_raised(TransientStorageError, errno.EIO))
    assert reason == "region storage error: input/output error"


def test_warnings_are_capped_with_a_count_of_the_rest() -> None:
    assert capped_warnings(["a"] * 100) == ["a"] * 100
    capped = capped_warnings([f"w{i}" for i in range(1000)])
    assert len(capped) == 100 and capped[-1] == "... and at least 901 more" and capped[0] == "w0"
    assert capped_warnings(["w"] * 150)[-1] == "... and 51 more"
    (long,) = capped_warnings(["x" * 1000])
    assert len(long) == 300 and long.endswith("...")
