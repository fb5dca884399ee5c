"""Files and folders of the trusted zone, readable by their owner only.

The data directory holds names and amounts in clear (the SQLite database, its WAL, the queue) and
secrets (key files, the audit chain): it is created ``0700`` and the files in it ``0600``, whatever
the process's umask. SQLite creates a database's ``-wal`` and ``-shm`` files with the database
file's own mode, so creating the database file ``0600`` first covers them.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
#: The process-wide umask of qhybrid's commands: whatever a library creates is private too.
UMASK = 0o077


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) as ``0700``; tighten it if it exists and is ours."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Create ``path`` empty as ``0600`` if absent; tighten it (and SQLite's companions) if ours."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        _tighten(candidate, FILE_MODE)


def _tighten(path: Path, mode: int) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    # Only what this user owns: a shared folder given as the data dir is not ours to change.
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & ~mode:
        os.chmod(path, mode)
