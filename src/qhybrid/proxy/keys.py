"""Sealing obfuscation keys at rest: AES-256-GCM under a key-encryption key (KEK).

A job's :class:`~qhybrid.proxy.obfuscation.ObfuscationKey` is everything needed to read its
samples, so it is stored only sealed: ``AES-256-GCM(KEK, nonce, key bytes, aad = job id)`` with a
fresh random 96-bit nonce per seal. The job id as associated data binds a sealed key to its job:
a blob copied to another job's row does not open. A decomposed job's sub-problems each have their
own key, sealed with the job id and the task's name (``r<round>p<part>``): a blob copied to another
task of the same job does not open either. The KEK comes from the setting
(``QHYBRID_KEY_ENCRYPTION_KEY``, base64 of 32 bytes) or, in the embedded default, from a key file
created on first use with mode ``0600``.

Blob layout: ``b"QHK1" ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)``; the 4-byte prefix is
authenticated too (it is part of the associated data), so a future format cannot be confused
with this one.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qhybrid.domain.errors import PermanentError
from qhybrid.proxy.obfuscation import ObfuscationKey

#: Format marker of a sealed key.
MAGIC = b"QHK1"
KEK_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


class KeyVaultError(PermanentError, ValueError):
    """A sealed key that does not open: wrong job, wrong KEK, tampered or truncated blob.

    Permanent: it means the trusted DB was altered or the KEK changed; no amount of retrying reads
    those samples, and the operators must hear of it.
    """


class KeyVault:
    """Seals and opens obfuscation keys with one key-encryption key.

    Args:
        kek: 32 random bytes (AES-256).

    Raises:
        ValueError: If ``kek`` is not 32 bytes.
    """

    def __init__(self, kek: bytes) -> None:
        if not isinstance(kek, bytes | bytearray) or len(kek) != KEK_BYTES:
            raise ValueError(f"the key-encryption key must be {KEK_BYTES} bytes")
        self._aead = AESGCM(bytes(kek))

    def __repr__(self) -> str:
        return "KeyVault(<secret>)"

    def seal(self, key: ObfuscationKey, *, job_id: str, task: str | None = None) -> bytes:
        """Encrypt and authenticate ``key`` for the job ``job_id``.

        Args:
            key: The obfuscation key.
            job_id: The job it belongs to (associated data).
            task: For one of a job's many provider tasks (a decomposed job's sub-problem, e.g.
                ``"r2p1"``): the key then opens for that task only, never for the job's other tasks.
        """
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, key.to_bytes(), _associated(job_id, task))
        return MAGIC + nonce + sealed

    def open(self, blob: bytes, *, job_id: str, task: str | None = None) -> ObfuscationKey:
        """The key sealed in ``blob`` for ``job_id`` (and ``task``, if it was sealed for one).

        Raises:
            KeyVaultError: If the blob is malformed, was sealed for another job or with another
                KEK, or was modified.
        """
        if not isinstance(blob, bytes | bytearray) or len(blob) < len(MAGIC) + NONCE_BYTES + TAG_BYTES:
            raise KeyVaultError("not a sealed obfuscation key")
        data = bytes(blob)
        if data[: len(MAGIC)] != MAGIC:
            raise KeyVaultError("not a sealed obfuscation key of a known format")
        nonce = data[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        try:
            plain = self._aead.decrypt(nonce, data[len(MAGIC) + NONCE_BYTES :], _associated(job_id, task))
        except InvalidTag as error:
            raise KeyVaultError(
                "the sealed key does not open for this job or task (or was modified)"
            ) from error
        try:
            return ObfuscationKey.from_bytes(plain)
        except ValueError as error:  # authentic but unreadable: a bug, never an attacker
            raise KeyVaultError(f"the sealed key is not readable: {error}") from error


def _associated(job_id: str, task: str | None = None) -> bytes:
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("job_id must be a non-empty string")
    if task is None:
        return MAGIC + job_id.encode("utf-8")
    if not task or "\x00" in task or "\x00" in job_id:
        raise ValueError("task must be a non-empty string without NUL")
    # NUL never occurs in a job id or a task name, so (job, task) pairs cannot collide.
    return MAGIC + job_id.encode("utf-8") + b"\x00" + task.encode("utf-8")


def _decode_kek(value: str, origin: str) -> bytes:
    try:
        kek = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"{origin} is not valid base64") from error
    if len(kek) != KEK_BYTES:
        raise ValueError(f"{origin} must decode to {KEK_BYTES} bytes, got {len(kek)}")
    return kek


def load_kek(value: str | None, path: Path) -> bytes:
    """The key-encryption key: from the setting, else from ``path`` (created on first use).

    Args:
        value: Base64 of 32 bytes (the ``key_encryption_key`` setting), or ``None``.
        path: The key file of the embedded default. Created with a fresh random key, mode
            ``0600`` (its folder ``0700`` if it has to be created), when it does not exist; an
            existing file must be readable by its owner only.

    Returns:
        32 bytes.

    Raises:
        ValueError: If the value or the file does not hold base64 of 32 bytes, or the file is
            readable or writable by others than its owner.
    """
    if value is not None:
        return _decode_kek(value, "the key-encryption key setting")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        encoded = base64.b64encode(secrets.token_bytes(KEK_BYTES)) + b"\n"
        try:
            # O_EXCL: when two processes start together, exactly one creates the key.
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(encoded)
                handle.flush()
                os.fsync(handle.fileno())
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ValueError(
            f"the key file {path} must be accessible by its owner only (mode {mode:o}); chmod 600"
        )
    text = path.read_text(encoding="ascii")
    for _ in range(50):
        if text.strip():
            break
        # Another process created the file an instant ago and is still writing it.
        time.sleep(0.02)
        text = path.read_text(encoding="ascii")
    return _decode_kek(text, f"the key file {path}")
