"""A missing or wrong key-encryption key stops the worker from starting; no job is lost."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from qhybrid.core.config import Settings
from qhybrid.domain.states import JobState
from qhybrid.proxy.keys import KekMissingError, kek_id, load_keyring, new_kek, write_keyring
from tests.support.journey import build


def _worker_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "QHYBRID_DATA_DIR": str(settings.data_dir),
        "QHYBRID_CLOUD_URL": settings.cloud_url,
        "QHYBRID_CLOUD_TOKEN": settings.cloud_token.get_secret_value(),
        "QHYBRID_CLOUD_CA_FILE": str(settings.cloud_ca_file),
    }


def test_a_moved_kek_refuses_the_start_and_its_return_completes_the_job(
    cloud_settings: Settings, consumer_for: Any
) -> None:
    services = build(cloud_settings)
    job_id = services.new_job()
    services.journey.advance(job_id)  # PREPARING seals the key; the task is on the QPU
    job = services.store.get_job(job_id)
    assert job is not None and job.proxy_key is not None
    assert JobState(job.state) in {JobState.SUBMITTED, JobState.REMOTE_QUEUED, JobState.REMOTE_RUNNING}

    kek = cloud_settings.kek_path
    aside = kek.with_name("kek.moved-away")
    kek.rename(aside)
    with pytest.raises(KekMissingError, match=rf"{kek} is missing, but 1 job\(s\) hold keys sealed with it"):
        build(cloud_settings)
    started = subprocess.run(
        [sys.executable, "-m", "qhybrid", "worker"],
        env=_worker_env(cloud_settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert started.returncode == 2, started.stderr
    assert f"the key-encryption key file {kek} is missing" in started.stderr
    assert "Traceback" not in started.stderr
    assert not kek.exists()  # no new KEK was made behind the operator's back

    aside.rename(kek)
    restarted = build(cloud_settings)
    consumer_for(restarted)
    restarted.queue.kick(job_id)
    assert restarted.wait_for(job_id, {JobState.COMPLETED, JobState.FAILED}) == "COMPLETED"
    finished = restarted.store.get_job(job_id)
    assert finished is not None and finished.result is not None
    assert finished.result["source"] != "classical_fallback"  # the QPU's samples were read back


def test_a_kek_that_does_not_open_unfinished_jobs_refuses_the_start(cloud_settings: Settings) -> None:
    services = build(cloud_settings)
    job_id = services.new_job()
    services.journey.advance(job_id)
    kek = cloud_settings.kek_path
    original = load_keyring(None, kek)
    write_keyring(kek, [new_kek()])  # someone replaced the file
    with pytest.raises(KekMissingError, match=rf"{kek_id(original[0])} \(1 key\(s\)\); restore them"):
        build(cloud_settings)
    write_keyring(kek, original)
    build(cloud_settings)
