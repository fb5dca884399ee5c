"""Sealing obfuscation keys: round trip, binding to the job, tampering, the key-encryption key."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qhybrid.proxy.keys import (
    KekMissingError,
    KeyVault,
    KeyVaultError,
    kek_id,
    load_kek,
    load_keyring,
    sealed_kid,
    write_keyring,
)
from qhybrid.proxy.obfuscation import ObfuscationKey

KEY = ObfuscationKey(3, 5, (4, 0, 2), (True, False, True, False, False), (True, False), 1.7, -0.2, "high")
KEK = bytes(range(32))


def test_seal_open_round_trip() -> None:
    vault = KeyVault(KEK)
    blob = vault.seal(KEY, job_id="job-1")
    assert vault.open(blob, job_id="job-1") == KEY


def test_every_seal_uses_a_fresh_nonce() -> None:
    vault = KeyVault(KEK)
    assert vault.seal(KEY, job_id="j") != vault.seal(KEY, job_id="j")


def test_the_blob_hides_the_key() -> None:
    blob = KeyVault(KEK).seal(KEY, job_id="j")
    assert KEY.to_bytes() not in blob
    assert b"positions" not in blob


def test_wrong_job_id_fails() -> None:
    vault = KeyVault(KEK)
    blob = vault.seal(KEY, job_id="job-1")
    with pytest.raises(KeyVaultError, match="does not open"):
        vault.open(blob, job_id="job-2")


def test_a_task_key_opens_only_for_its_own_task_of_its_own_job() -> None:
    vault = KeyVault(KEK)
    blob = vault.seal(KEY, job_id="job-1", task="r1p0")
    assert vault.open(blob, job_id="job-1", task="r1p0") == KEY
    for job_id, task in (("job-1", "r1p1"), ("job-1", "r2p0"), ("job-1", None), ("job-2", "r1p0")):
        with pytest.raises(KeyVaultError, match="does not open"):
            vault.open(blob, job_id=job_id, task=task)
    # Nor does the job's single key open as one of its tasks.
    with pytest.raises(KeyVaultError):
        vault.open(vault.seal(KEY, job_id="job-1"), job_id="job-1", task="r1p0")
    with pytest.raises(ValueError, match="task"):
        vault.seal(KEY, job_id="job-1", task="")


def test_wrong_kek_fails() -> None:
    blob = KeyVault(KEK).seal(KEY, job_id="j")
    with pytest.raises(KeyVaultError):
        KeyVault(bytes(32)).open(blob, job_id="j")


@pytest.mark.parametrize("position", [0, 4, 10, 20, -1])
def test_any_tampered_byte_fails(position: int) -> None:
    vault = KeyVault(KEK)
    blob = bytearray(vault.seal(KEY, job_id="j"))
    blob[position] ^= 0x01
    with pytest.raises(KeyVaultError):
        vault.open(bytes(blob), job_id="j")


def test_truncated_blob_fails() -> None:
    vault = KeyVault(KEK)
    blob = vault.seal(KEY, job_id="j")
    for cut in (0, 5, len(blob) - 1):
        with pytest.raises(KeyVaultError):
            vault.open(blob[:cut], job_id="j")


def test_vault_and_key_reprs_reveal_nothing() -> None:
    vault = KeyVault(KEK)
    assert repr(vault) == "KeyVault(<secret>)"
    assert repr(KEY) == "ObfuscationKey(<secret>)"


def test_kek_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        KeyVault(b"short")


def test_job_id_must_be_given() -> None:
    with pytest.raises(ValueError, match="job_id"):
        KeyVault(KEK).seal(KEY, job_id="")


def test_load_kek_from_the_setting(tmp_path: Path) -> None:
    value = base64.b64encode(KEK).decode()
    assert load_kek(value, tmp_path / "unused") == KEK
    assert not (tmp_path / "unused").exists()
    with pytest.raises(ValueError, match="base64"):
        load_kek("not base64!", tmp_path / "unused")
    with pytest.raises(ValueError, match="32 bytes"):
        load_kek(base64.b64encode(b"short").decode(), tmp_path / "unused")


def test_load_kek_creates_a_private_key_file_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "kek"
    first = load_kek(None, path)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_kek(None, path) == first  # the same key on every later start
    blob = KeyVault(first).seal(KEY, job_id="j")
    assert KeyVault(load_kek(None, path)).open(blob, job_id="j") == KEY


def test_load_kek_refuses_a_readable_key_file(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    path.write_text(base64.b64encode(KEK).decode())
    os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="owner only"):
        load_kek(None, path)
    os.chmod(path, 0o600)
    assert load_kek(None, path) == KEK


def test_load_kek_refuses_a_corrupt_key_file(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    path.write_text("garbage")
    os.chmod(path, 0o600)
    with pytest.raises(ValueError, match="key file"):
        load_kek(None, path)


# ------------------------------------------------------------------- key ids and the keyring


def test_a_sealed_key_names_the_kek_that_sealed_it() -> None:
    vault = KeyVault(KEK)
    blob = vault.seal(KEY, job_id="j")
    assert blob[:4] == b"QHK2"
    assert sealed_kid(blob) == kek_id(KEK) == vault.kid
    assert len(vault.kid) == 16 and vault.kid not in KEK.hex()


def test_keys_sealed_before_key_ids_still_open() -> None:
    nonce = bytes(12)
    legacy = b"QHK1" + nonce + AESGCM(KEK).encrypt(nonce, KEY.to_bytes(), b"QHK1" + b"job-7")
    vault = KeyVault([bytes(32), KEK])  # sealed under an older KEK of the ring
    assert sealed_kid(legacy) is None
    assert vault.open(legacy, job_id="job-7") == KEY
    resealed = vault.reseal(legacy, job_id="job-7")
    assert sealed_kid(resealed) == kek_id(bytes(32))
    assert vault.open(resealed, job_id="job-7") == KEY
    with pytest.raises(KeyVaultError, match="does not open"):
        vault.open(legacy, job_id="job-8")


def test_a_ring_opens_keys_of_every_kek_and_seals_with_the_first() -> None:
    old, new = KeyVault(KEK), KeyVault([bytes(32), KEK])
    blob = old.seal(KEY, job_id="j")
    assert new.open(blob, job_id="j") == KEY
    assert sealed_kid(new.seal(KEY, job_id="j")) == kek_id(bytes(32))
    assert new.reseal(new.seal(KEY, job_id="j"), job_id="j")[:12] == b"QHK2" + bytes.fromhex(new.kid)


def test_an_unknown_kek_is_named_and_the_ring_reloaded_once() -> None:
    blob = KeyVault(bytes(32)).seal(KEY, job_id="j")
    with pytest.raises(
        KeyVaultError, match=f"key-encryption key {kek_id(bytes(32))}, which is not in the keyring"
    ):
        KeyVault(KEK).open(blob, job_id="j")
    reloads: list[int] = []

    def reload() -> list[bytes]:
        reloads.append(1)
        return [bytes(32), KEK]

    vault = KeyVault(KEK, reload=reload)
    assert vault.open(blob, job_id="j") == KEY  # a rotation happened meanwhile: the file is read again
    assert vault.open(blob, job_id="j") == KEY
    assert reloads == [1]


def test_a_missing_key_file_is_not_recreated_while_keys_are_sealed(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "kek"
    with pytest.raises(KekMissingError, match=rf"{path} is missing, but 3 job\(s\) hold keys sealed with it"):
        load_keyring(None, path, sealed_keys=3)
    assert not path.exists()
    assert len(load_keyring(None, path, sealed_keys=0)) == 1  # nothing sealed yet: created


def test_the_key_file_and_the_setting_hold_a_ring(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    write_keyring(path, [bytes(32), KEK])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keyring(None, path) == [bytes(32), KEK]
    assert load_kek(None, path) == bytes(32)
    setting = f"{base64.b64encode(KEK).decode()}, {base64.b64encode(bytes(32)).decode()}"
    assert load_keyring(setting, path) == [KEK, bytes(32)]
