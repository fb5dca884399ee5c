"""32-byte secrets that every process of a deployment shares: from a setting, or a file made once.

The gateway's client-token key and the proxy's persistent-noise key are such secrets: a worker
that restarts, or another worker, must use the same one. Each comes from its ``QHYBRID_*``
setting (base64 of 32 bytes; set it on every host of a multi-host deployment) or, in the embedded
default, from a file under the data directory, created on first use with mode 0600 in a 0700
directory and refused when others can read it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
import stat
from pathlib import Path

KEY_BYTES = 32


class KeyFileError(ValueError):
    """A key setting or file that is malformed, or readable by others."""


def _decode(value: str, setting: str) -> bytes:
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"{setting} is not valid base64") from exc
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{setting} must decode to {KEY_BYTES} bytes, got {len(key)}")
    return key


def load_key(value: str | None, path: Path, *, setting: str) -> bytes:
    """The secret: ``value`` (base64) if given, else the key file, created if absent.

    Args:
        value: The setting's value, base64 of 32 bytes, or ``None``.
        path: The key file of the embedded default.
        setting: The setting's name, for messages (never its value).

    Returns:
        32 bytes.

    Raises:
        KeyFileError: On a malformed value, or a key file of the wrong size or readable by others.
    """
    if value is not None:
        return _decode(value, setting)
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Written aside, then linked into place: two processes starting together never see a
        # half-written key, and the second one keeps the first one's (link fails if it exists).
        draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(draft, path)
        finally:
            draft.unlink(missing_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"{path} is readable by others (mode {mode:o}); make it 0600")
    return _decode(path.read_text(encoding="ascii"), str(path))
