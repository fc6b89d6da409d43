"""The data directory holds the database, the task queue, the admin password and the key of
stored secrets: it is private to the service's user.

`prepare` creates it 0700, or takes group and other permissions off an existing one and off
the files directly in it (left 0644 by older versions or by a copy). Files the service
creates later are private by the process's umask (`PRIVATE_UMASK`, set by the CLI) and by
the modes the code gives them; nothing here loosens a mode.

Imports nothing of opencbr.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
DIRECTORY_MODE = 0o700


def prepare(data_dir: Path) -> None:
    """Create `data_dir` (0700) if absent; make it and the files directly in it private.

    Raises OSError when it cannot be created or changed.
    """
    data_dir.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    make_private(data_dir)
    for entry in os.scandir(data_dir):
        if entry.is_file(follow_symlinks=False):
            make_private(Path(entry.path))


def make_private(path: Path) -> None:
    """Take group and other permissions off `path` itself (not a symlink's target).

    Raises OSError when it cannot be changed (another user's file)."""
    mode = stat.S_IMODE(path.lstat().st_mode)
    if mode & 0o077:
        path.chmod(mode & ~0o077)


def make_key_file_private(path: Path) -> str | None:
    """Take group and other permissions off the key file `path` names, following a symlink
    (a secret an orchestrator mounts is one). Returns why it could not (a read-only mount,
    another user's file), None once it is private; FileNotFoundError when there is none."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return None
    try:
        os.chmod(path, mode & ~0o077)
    except FileNotFoundError:
        raise
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None
