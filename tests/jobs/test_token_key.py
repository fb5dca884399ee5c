"""A task token stored by a host that died before its POST: who can send it, and who must refuse.

The journey stores a provider task's client token before the call (at most one task per attempt),
and the gateway refuses any token its key did not mint. So the token key is shared by every
worker host, like the KEK: a host with the same key finishes the dead host's job under the
stored token (one POST at the provider); a host with another key refuses to start while such a
token waits, and one already running answers classically, saying why, without a POST.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from qhybrid.core.config import Settings
from qhybrid.domain.states import JobState
from qhybrid.gateway.tokens import ForeignTokenError
from tests.jobs.test_decomposed import SMALL, decomposed_request
from tests.support.backends import Crash, Forwarding
from tests.support.cloud import CloudServer
from tests.support.journey import Services, build


class CrashBeforeSubmit(Forwarding):
    """The real cloud adapter, except that the worker 'dies' after the journey stored the token
    and before the POST left."""

    def submit(self, program: str, shots: int, client_token: str) -> str:
        raise Crash


def _key() -> SecretStr:
    return SecretStr(base64.b64encode(os.urandom(32)).decode())


def _host(base: Settings, root: Path, name: str, *, database_url: str, token_key: SecretStr) -> Settings:
    """A host's settings: its own data dir, the shared database and KEK, the given token key."""
    data_dir = root / name
    data_dir.mkdir()
    return base.model_copy(
        update={
            "data_dir": data_dir,
            "database_url": database_url,
            "egress_token_key": token_key,
            "lease_seconds": 0.5,
        }
    )


def _die_before_the_post(host_b: Services) -> tuple[str, str]:
    """Host B prepares a job, stores its token, and dies before submitting: (job id, token)."""
    real = host_b.backends.get("local")
    host_b.backends._backends["local"] = CrashBeforeSubmit(real)
    job_id = host_b.new_job()
    with pytest.raises(Crash):
        host_b.journey.advance(job_id)
    row = host_b.store.remote_task(job_id, 1)
    assert row is not None and row.task_id is None
    time.sleep(0.6)  # host B's lease expires
    return job_id, row.client_token


@pytest.fixture
def shared(cloud_settings: Settings, tmp_path: Path) -> dict[str, Any]:
    """What every host shares: the database (one SQLite file here) and the KEK."""
    return {
        "database_url": f"sqlite:///{tmp_path / 'shared.db'}",
        "key_encryption_key": _key(),
    }


def test_a_host_with_the_same_token_key_submits_the_dead_hosts_task_once(
    cloud_settings: Settings, cloud_process: CloudServer, shared: dict[str, Any], tmp_path: Path
) -> None:
    base = cloud_settings.model_copy(update={"key_encryption_key": shared["key_encryption_key"]})
    token_key = _key()
    host_b = build(_host(base, tmp_path, "b", database_url=shared["database_url"], token_key=token_key))
    job_id, token = _die_before_the_post(host_b)
    assert token not in cloud_process.submissions()

    host_a = build(_host(base, tmp_path, "a", database_url=shared["database_url"], token_key=token_key))
    host_a.journey.advance(job_id)
    job = host_a.store.get_job(job_id)
    assert job is not None and job.state == JobState.SUBMITTED.value and job.fallback_reason is None
    row = host_a.store.remote_task(job_id, 1)
    assert row is not None and row.client_token == token and row.task_id is not None
    assert cloud_process.submissions()[token] == 1


def test_a_host_with_another_token_key_refuses_to_start(
    cloud_settings: Settings, shared: dict[str, Any], tmp_path: Path
) -> None:
    base = cloud_settings.model_copy(update={"key_encryption_key": shared["key_encryption_key"]})
    url = shared["database_url"]
    host_b = build(_host(base, tmp_path, "b", database_url=url, token_key=_key()))
    _die_before_the_post(host_b)

    other = _host(base, tmp_path, "c", database_url=url, token_key=_key())
    with pytest.raises(ForeignTokenError, match=r"1 unfinished job task\(s\) hold a client token that was"):
        build(other)
    started = subprocess.run(
        [sys.executable, "-m", "qhybrid", "worker"],
        env={
            **os.environ,
            "QHYBRID_DATA_DIR": str(other.data_dir),
            "QHYBRID_DATABASE_URL": url,
            "QHYBRID_KEY_ENCRYPTION_KEY": shared["key_encryption_key"].get_secret_value(),
            "QHYBRID_EGRESS_TOKEN_KEY": _key().get_secret_value(),
            "QHYBRID_CLOUD_URL": other.cloud_url,
            "QHYBRID_CLOUD_TOKEN": other.cloud_token.get_secret_value(),
            "QHYBRID_CLOUD_CA_FILE": str(other.cloud_ca_file),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert started.returncode == 2, started.stderr
    assert "set the same QHYBRID_EGRESS_TOKEN_KEY on every worker host" in started.stderr
    assert "Traceback" not in started.stderr


def test_a_running_host_with_another_token_key_answers_classically_and_says_why(
    cloud_settings: Settings, cloud_process: CloudServer, shared: dict[str, Any], tmp_path: Path
) -> None:
    base = cloud_settings.model_copy(update={"key_encryption_key": shared["key_encryption_key"]})
    url = shared["database_url"]
    # Host C started before host B stored the token, so its start-up check found nothing.
    host_c = build(_host(base, tmp_path, "c", database_url=url, token_key=_key()))
    host_b = build(_host(base, tmp_path, "b", database_url=url, token_key=_key()))
    job_id, token = _die_before_the_post(host_b)

    host_c.journey.advance(job_id)
    job = host_c.store.get_job(job_id)
    assert job is not None and job.state == JobState.COMPLETED.value
    assert job.fallback_reason is not None
    assert "set the same QHYBRID_EGRESS_TOKEN_KEY on every worker host" in job.fallback_reason
    assert job.result is not None and job.result["source"] == "classical_fallback"
    assert token not in cloud_process.submissions()  # refused at this host's gateway: nothing left


def test_a_decomposed_job_with_another_hosts_token_answers_classically_and_says_why(
    cloud_settings: Settings, cloud_process: CloudServer, shared: dict[str, Any], tmp_path: Path
) -> None:
    base = cloud_settings.model_copy(
        update={**SMALL, "decomposition_rounds": 1, "key_encryption_key": shared["key_encryption_key"]}
    )
    url = shared["database_url"]
    host_c = build(_host(base, tmp_path, "c", database_url=url, token_key=_key()))
    host_b = build(_host(base, tmp_path, "b", database_url=url, token_key=_key()))
    host_b.backends._backends["local"] = CrashBeforeSubmit(host_b.backends.get("local"))
    job_id = host_b.new_job(decomposed_request())
    with pytest.raises(Crash):
        host_b.journey.advance(job_id)  # the round's rows and tokens stored, no POST
    rows = host_b.store.round_tasks(job_id, 1)
    assert rows and all(row.task_id is None for row in rows)
    time.sleep(0.6)  # host B's lease expires

    host_c.journey.advance(job_id)
    job = host_c.store.get_job(job_id)
    assert job is not None and job.fallback_reason is not None
    assert "the stored client token of sub-problem 0 of round 1" in job.fallback_reason
    assert "set the same QHYBRID_EGRESS_TOKEN_KEY on every worker host" in job.fallback_reason
    submissions = cloud_process.submissions()
    assert not any(row.client_token in submissions for row in rows)
