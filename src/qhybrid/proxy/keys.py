"""Sealing obfuscation keys at rest: AES-256-GCM under a key-encryption key (KEK).

A job's :class:`~qhybrid.proxy.obfuscation.ObfuscationKey` is everything needed to read its
samples, so it is stored only sealed: ``AES-256-GCM(KEK, nonce, key bytes, aad = header ‖ job
id)`` with a fresh random 96-bit nonce per seal. The job id as associated data binds a sealed key
to its job: a blob copied to another job's row does not open. A decomposed job's sub-problems each
have their own key, sealed with the job id and the task's name (``r<round>p<part>``): a blob copied
to another task of the same job does not open either.

The KEKs form a keyring, the active one first: the setting (``QHYBRID_KEY_ENCRYPTION_KEY``, base64
of 32 bytes, several separated by commas) or, in the embedded default, the key file (one per line,
created on first use with mode ``0600``, never re-created while sealed keys exist). Each KEK has an
id (:func:`kek_id`, a hash of it), and every sealed key names the KEK that sealed it, so
``qhybrid kek rotate`` can re-seal every key under a new KEK while the older ones still open.

Blob layout: ``b"QHK2" ‖ KEK id (8 bytes) ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)``; the
header is authenticated too (part of the associated data). Blobs sealed before key ids existed
(``b"QHK1" ‖ nonce ‖ ciphertext ‖ tag``) still open with whichever KEK of the ring sealed them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qhybrid.domain.errors import PermanentError
from qhybrid.proxy.obfuscation import ObfuscationKey

#: Format markers of a sealed key: QHK2 names the KEK that sealed it, QHK1 (older) does not.
MAGIC = b"QHK2"
LEGACY_MAGIC = b"QHK1"
KEK_BYTES = 32
KID_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16


def kek_id(kek: bytes) -> str:
    """The key id of a KEK: 16 hex digits of a hash of it (a label, never enough to guess the key)."""
    return hashlib.sha256(b"qhybrid-kek-id\0" + kek).hexdigest()[: 2 * KID_BYTES]


class KeyVaultError(PermanentError, ValueError):
    """A sealed key that does not open: wrong job, wrong KEK, tampered or truncated blob.

    Permanent: it means the trusted DB was altered or the KEK changed; no amount of retrying reads
    those samples, and the operators must hear of it.
    """


class KeyVault:
    """Seals keys with the active key-encryption key; opens them with any KEK of the keyring.

    Args:
        kek: The KEK (32 random bytes), or the keyring: the active KEK first, then older ones
            that still open keys sealed before a rotation.
        reload: Reads the keyring again; called once when a blob names a KEK this vault does not
            hold (a rotation by ``qhybrid kek rotate`` while this process runs).

    Raises:
        ValueError: If a KEK is not 32 bytes, or there is none.
    """

    def __init__(
        self, kek: bytes | Sequence[bytes], *, reload: Callable[[], list[bytes]] | None = None
    ) -> None:
        self._reload = reload
        self._use(kek)

    def _use(self, kek: bytes | Sequence[bytes]) -> None:
        ring = [kek] if isinstance(kek, bytes | bytearray) else list(kek)
        if not ring or any(not isinstance(k, bytes | bytearray) or len(k) != KEK_BYTES for k in ring):
            raise ValueError(f"the key-encryption key must be {KEK_BYTES} bytes")
        self._ring = {bytes.fromhex(kek_id(bytes(k))): AESGCM(bytes(k)) for k in ring}
        self._active = bytes.fromhex(kek_id(bytes(ring[0])))

    def __repr__(self) -> str:
        return "KeyVault(<secret>)"

    @property
    def kid(self) -> str:
        """The id of the KEK that seals."""
        return self._active.hex()

    @property
    def kids(self) -> list[str]:
        """The ids of every KEK this vault opens with, the active one first."""
        return [self._active.hex(), *(k.hex() for k in self._ring if k != self._active)]

    def seal(self, key: ObfuscationKey, *, job_id: str, task: str | None = None) -> bytes:
        """Encrypt and authenticate ``key`` for the job ``job_id`` under the active KEK.

        Args:
            key: The obfuscation key.
            job_id: The job it belongs to (associated data).
            task: For one of a job's many provider tasks (a decomposed job's sub-problem, e.g.
                ``"r2p1"``): the key then opens for that task only, never for the job's other tasks.
        """
        nonce = secrets.token_bytes(NONCE_BYTES)
        header = MAGIC + self._active
        associated = header + _associated(job_id, task)
        sealed = self._ring[self._active].encrypt(nonce, key.to_bytes(), associated)
        return header + nonce + sealed

    def open(self, blob: bytes, *, job_id: str, task: str | None = None) -> ObfuscationKey:
        """The key sealed in ``blob`` for ``job_id`` (and ``task``, if it was sealed for one).

        Raises:
            KeyVaultError: If the blob is malformed, was sealed for another job or task or with
                a KEK this vault does not hold, or was modified.
        """
        return _read_key(self._plain(blob, job_id, task))

    def reseal(self, blob: bytes, *, job_id: str, task: str | None = None) -> bytes:
        """``blob`` sealed again under the active KEK (unchanged if it already is).

        Raises:
            KeyVaultError: As :meth:`open`.
        """
        if sealed_kid(blob) == self.kid:
            return blob
        return self.seal(self.open(blob, job_id=job_id, task=task), job_id=job_id, task=task)

    def _plain(self, blob: bytes, job_id: str, task: str | None) -> bytes:
        associated = _associated(job_id, task)  # validates the job id and task, whatever the format
        if not isinstance(blob, bytes | bytearray) or len(blob) < len(MAGIC) + NONCE_BYTES + TAG_BYTES:
            raise KeyVaultError("not a sealed obfuscation key")
        data = bytes(blob)
        if data[: len(LEGACY_MAGIC)] == LEGACY_MAGIC:
            # Sealed before key ids existed: whichever KEK of the ring opens it.
            nonce, body = data[4 : 4 + NONCE_BYTES], data[4 + NONCE_BYTES :]
            legacy_associated = LEGACY_MAGIC + associated[len(MAGIC) :]
            for legacy in self._ring.values():
                with contextlib.suppress(InvalidTag):
                    return legacy.decrypt(nonce, body, legacy_associated)
            raise KeyVaultError("the sealed key does not open for this job or task (or was modified)")
        if data[: len(MAGIC)] != MAGIC or len(data) < len(MAGIC) + KID_BYTES + NONCE_BYTES + TAG_BYTES:
            raise KeyVaultError("not a sealed obfuscation key of a known format")
        header = data[: len(MAGIC) + KID_BYTES]
        kid = header[len(MAGIC) :]
        if kid not in self._ring and self._reload is not None:
            self._use(self._reload())
        aead = self._ring.get(kid)
        if aead is None:
            raise KeyVaultError(
                f"the key was sealed with key-encryption key {kid.hex()}, which is not in the keyring "
                f"(it holds {', '.join(self.kids)}); restore that KEK"
            )
        nonce = data[len(header) : len(header) + NONCE_BYTES]
        try:
            return aead.decrypt(nonce, data[len(header) + NONCE_BYTES :], header + associated)
        except InvalidTag as error:
            raise KeyVaultError(
                "the sealed key does not open for this job or task (or was modified)"
            ) from error


def _read_key(plain: bytes) -> ObfuscationKey:
    try:
        return ObfuscationKey.from_bytes(plain)
    except ValueError as error:  # authentic but unreadable: a bug, never an attacker
        raise KeyVaultError(f"the sealed key is not readable: {error}") from error


def sealed_kid(blob: bytes) -> str | None:
    """The id of the KEK that sealed ``blob`` (``None`` for blobs older than key ids)."""
    data = bytes(blob)
    if data[: len(MAGIC)] != MAGIC or len(data) < len(MAGIC) + KID_BYTES:
        return None
    return data[len(MAGIC) : len(MAGIC) + KID_BYTES].hex()


def _associated(job_id: str, task: str | None = None) -> bytes:
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("job_id must be a non-empty string")
    if task is None:
        return MAGIC + job_id.encode("utf-8")
    if not task or "\x00" in task or "\x00" in job_id:
        raise ValueError("task must be a non-empty string without NUL")
    # NUL never occurs in a job id or a task name, so (job, task) pairs cannot collide.
    return MAGIC + job_id.encode("utf-8") + b"\x00" + task.encode("utf-8")


class KekMissingError(PermanentError, RuntimeError):
    """The KEK file is gone while sealed keys exist: a new KEK would make their jobs unreadable."""


def _decode_kek(value: str, origin: str) -> bytes:
    try:
        kek = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"{origin} is not valid base64") from error
    if len(kek) != KEK_BYTES:
        raise ValueError(f"{origin} must decode to {KEK_BYTES} bytes, got {len(kek)}")
    return kek


def _decode_ring(text: str, origin: str) -> list[bytes]:
    # One KEK per line (or per comma, in the setting), the active one first.
    items = [item for item in text.replace(",", "\n").split() if item.strip()]
    if not items:
        raise ValueError(f"{origin} holds no key")
    return [_decode_kek(item, origin) for item in items]


def load_keyring(value: str | None, path: Path, *, sealed_keys: int = 0) -> list[bytes]:
    """The keyring, the active KEK first: from the setting, else from ``path``.

    Args:
        value: The ``key_encryption_key`` setting: base64 of 32 bytes, or several separated by
            commas (the active one first), or ``None``.
        path: The key file of the embedded default: one base64 KEK per line, the active one
            first. Created with a fresh KEK (mode ``0600``, folder ``0700``) when it does not
            exist and no key is sealed yet.
        sealed_keys: How many jobs hold sealed keys. With any, a missing file is an error, never
            a reason to create a new KEK.

    Returns:
        The KEKs, 32 bytes each, the active one first.

    Raises:
        KekMissingError: If the file is missing while sealed keys exist.
        ValueError: If the value or the file is malformed, or the file is readable or writable
            by others than its owner.
    """
    if value is not None:
        return _decode_ring(value, "the key-encryption key setting")
    if not path.exists():
        if sealed_keys:
            raise KekMissingError(
                f"the key-encryption key file {path} is missing, but {sealed_keys} job(s) hold keys "
                "sealed with it; restore the file (or set QHYBRID_KEY_ENCRYPTION_KEY) and start "
                "again. A new key is not created: it would make those jobs unreadable"
            )
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
    return _decode_ring(text, f"the key file {path}")


def load_kek(value: str | None, path: Path) -> bytes:
    """The active key-encryption key (see :func:`load_keyring`)."""
    return load_keyring(value, path)[0]


def write_keyring(path: Path, ring: Sequence[bytes]) -> None:
    """Replace the key file with ``ring`` (active first), atomically, mode ``0600``."""
    draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(b"".join(base64.b64encode(kek) + b"\n" for kek in ring))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(draft, path)
    finally:
        draft.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def new_kek() -> bytes:
    """A fresh random KEK."""
    return secrets.token_bytes(KEK_BYTES)
