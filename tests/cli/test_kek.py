"""`qhybrid kek rotate`: a new KEK, every sealed key re-sealed under it, older KEKs retired."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import update
from typer.testing import CliRunner

from qhybrid.cli import app
from qhybrid.core.config import Settings
from qhybrid.jobs.database import Database
from qhybrid.jobs.journey import vault_from
from qhybrid.jobs.models import Job, RemoteTask, utcnow
from qhybrid.jobs.store import JobStore
from qhybrid.jobs.subproblems import task_name
from qhybrid.proxy.keys import KeyVault, kek_id, load_keyring, new_kek, sealed_kid
from qhybrid.proxy.obfuscation import ObfuscationKey

KEYS = [
    ObfuscationKey(3, 5, (4, 0, 2), (True, False, True, False, False), (True, False), 1.0 + i, -0.2, "high")
    for i in range(3)
]


def _job_with(store: JobStore, blob_of: object) -> str:
    job_id = str(uuid.uuid4())
    store.create_job(
        job_id=job_id,
        request={},
        request_hash=uuid.uuid4().hex,
        backend="local",
        shots=10,
        deadline_at=utcnow() + timedelta(hours=1),
    )
    blob = blob_of(job_id)  # type: ignore[operator]
    with store.db.write() as session:
        session.execute(update(Job).where(Job.id == job_id).values(proxy_key=blob))
    return job_id


def test_rotation_reseals_every_key_and_retires_old_keks(database_url: str, data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, database_url=database_url)
    db = Database(database_url)
    db.migrate()
    store = JobStore(db)
    first = vault_from(settings, store)  # the embedded default: creates the key file
    jobs = {_job_with(store, lambda j, k=k: first.seal(k, job_id=j)): k for k in KEYS[:2]}
    # A key sealed before key ids existed (format QHK1) is re-sealed too.
    kek = load_keyring(None, settings.kek_path)[0]
    nonce = bytes(12)
    legacy = _job_with(
        store,
        lambda j: b"QHK1" + nonce + AESGCM(kek).encrypt(nonce, KEYS[2].to_bytes(), b"QHK1" + j.encode()),
    )
    jobs[legacy] = KEYS[2]
    # A decomposed job's sub-problem key, sealed for its task (remote_tasks.proxy_key).
    decomposed = next(iter(jobs))
    with db.write() as session:
        session.add(
            RemoteTask(
                job_id=decomposed,
                attempt=1,
                round=1,
                part=0,
                backend="local",
                client_token=uuid.uuid4().hex,
                polls=0,
                proxy_key=first.seal(KEYS[1], job_id=decomposed, task=task_name(1, 0)),
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )

    runner = CliRunner()
    env = {"QHYBRID_DATA_DIR": str(data_dir), "QHYBRID_DATABASE_URL": database_url}
    rotated = runner.invoke(app, ["kek", "rotate"], env=env)
    assert rotated.exit_code == 0, rotated.output
    ring = load_keyring(None, settings.kek_path)
    assert len(ring) == 2 and ring[1] == kek and ring[0] != kek
    assert f"new key-encryption key {kek_id(ring[0])}" in rotated.stdout
    assert "re-sealed 4 of 4 job keys" in rotated.stdout
    keys = store.sealed_keys()
    assert {sealed_kid(key.blob) for key in keys} == {kek_id(ring[0])}
    reopened = KeyVault(ring[:1])  # the new KEK alone opens every key
    sealed = {key.job_id: key.blob for key in keys if key.part is None}
    assert {job: reopened.open(sealed[job], job_id=job) for job in jobs} == jobs
    (sub,) = [key for key in keys if key.part is not None]
    assert reopened.open(sub.blob, job_id=decomposed, task=task_name(1, 0)) == KEYS[1]

    again = runner.invoke(app, ["kek", "rotate"], env=env)
    assert again.exit_code == 0, again.output
    newer = load_keyring(None, settings.kek_path)
    # The KEK it replaced stays readable; the first one, used by no job any more, is gone.
    assert newer[1] == ring[0] and kek not in newer and len(newer) == 2
    assert "1 older key(s) dropped" in again.stdout
    vault = vault_from(settings, store)
    own = [key for key in store.sealed_keys() if key.part is None]
    assert {key.job_id: vault.open(key.blob, job_id=key.job_id) for key in own} == jobs
    db.dispose()


def test_rotation_with_the_setting_reseals_under_its_first_key(settings: Settings) -> None:
    db = Database(settings.resolved_database_url)
    db.migrate()
    store = JobStore(db)
    old, new = new_kek(), new_kek()
    job = _job_with(store, lambda j: KeyVault(old).seal(KEYS[0], job_id=j))
    setting = f"{base64.b64encode(new).decode()},{base64.b64encode(old).decode()}"
    env = {"QHYBRID_DATA_DIR": str(settings.data_dir), "QHYBRID_KEY_ENCRYPTION_KEY": setting}
    rotated = CliRunner().invoke(app, ["kek", "rotate"], env=env)
    assert rotated.exit_code == 0, rotated.output
    assert f"re-sealed 1 of 1 job keys under {kek_id(new)}" in rotated.stdout
    (stored,) = store.sealed_keys()
    blob = stored.blob
    assert KeyVault(new).open(blob, job_id=job) == KEYS[0]
    assert not settings.kek_path.exists()  # the setting's keys never go to a file
    db.dispose()
