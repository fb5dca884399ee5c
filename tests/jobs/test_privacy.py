"""The obfuscation proxy inside the journey: every level answers exactly, the key stays sealed."""

from __future__ import annotations

import hashlib
import json
import logging
import stat
from typing import Any

import pytest
from sqlalchemy import text

from qhybrid.core.config import Settings
from qhybrid.domain.privacy import PRIVACY_LEVELS
from qhybrid.domain.states import JobState
from qhybrid.portfolio.baselines import exact
from qhybrid.proxy.keys import MAGIC, KeyVaultError
from qhybrid.proxy.obfuscation import decoy_count
from tests.support.cloud import CloudServer
from tests.support.journey import REQUEST, build, formulation_of

# Six assets so that every level's decoys (ratio 1/8 at "high") give a whole qubit.
SIX: dict[str, Any] = {
    **REQUEST,
    "assets": [*REQUEST["assets"], {"name": "F", "expected_return": 0.008}],
    "covariance": [
        [*row, extra]
        for row, extra in zip(REQUEST["covariance"], (0.003, 0.002, 0.001, 0.002, 0.004), strict=True)
    ]
    + [[0.003, 0.002, 0.001, 0.002, 0.004, 0.021]],
    "budget": 3,
}


@pytest.mark.parametrize("level", PRIVACY_LEVELS)
def test_every_level_returns_the_exact_optimum(
    level: str, cloud_settings: Settings, consumer_for: Any
) -> None:
    services = build(cloud_settings)
    consumer_for(services)
    job_id = services.complete({**SIX, "privacy": level})
    view = services.store.view(job_id)
    assert view is not None and view.job.result is not None
    result = view.job.result
    optimum = exact(formulation_of(SIX))
    assert result["objective"] == pytest.approx(optimum.objective, rel=1e-12)
    assert result["source"] in {"quantum", "quantum+refinement"}
    sent_qubits = 6 + decoy_count(level, 6)  # type: ignore[arg-type]
    assert result["quantum"]["privacy"] == {"level": level, "qubits_sent": sent_qubits}
    # The provider measured the sent register (decoys included); the answer speaks of the six
    # real assets only.
    counts = view.remote_tasks[0].counts
    assert counts is not None and {len(k) for k in counts} == {sent_qubits}
    assert f"qubit[{sent_qubits}] q;" in (view.job.program or "")
    assert set(result["selected"]) <= {a["name"] for a in SIX["assets"]}


def test_the_key_is_stored_sealed_and_bound_to_its_job(cloud_settings: Settings, consumer_for: Any) -> None:
    services = build(cloud_settings)
    consumer_for(services)
    job_id = services.complete({**SIX, "privacy": "high"})
    job = services.store.get_job(job_id)
    assert job is not None and job.proxy_key is not None
    blob = bytes(job.proxy_key)
    assert blob.startswith(MAGIC)
    key = services.journey.vault.open(blob, job_id=job_id)
    assert key.num_variables == 6 and key.num_qubits == 6 + decoy_count("high", 6)
    # Nothing of the clear key is in the stored bytes.
    for fragment in (b"positions", b"flips", key.to_bytes()[:16]):
        assert fragment not in blob
    with pytest.raises(KeyVaultError):
        services.journey.vault.open(blob, job_id="another-job")
    # The embedded default's key-encryption key sits in a file only its owner can read.
    assert stat.S_IMODE(cloud_settings.kek_path.stat().st_mode) == 0o600


def test_the_key_appears_in_no_log_line(
    cloud_settings: Settings, consumer_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    services = build(cloud_settings)
    consumer_for(services)
    job_id = services.complete({**SIX, "privacy": "high"})
    job = services.store.get_job(job_id)
    assert job is not None and job.proxy_key is not None
    key = services.journey.vault.open(bytes(job.proxy_key), job_id=job_id)
    document = json.loads(key.to_bytes())
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert job_id in logged  # the capture saw the journey's lines (positive control)
    secrets_ = [
        json.dumps(document["positions"]),
        json.dumps(document["flips"]),
        repr(key.positions),
        repr(key.flips),
        bytes(job.proxy_key).hex(),
    ]
    for secret in secrets_:
        assert secret not in logged
    assert repr(key) == "ObfuscationKey(<secret>)"


def test_a_tampered_sealed_key_fails_the_job_loudly(cloud_settings: Settings, consumer_for: Any) -> None:
    services = build(cloud_settings)
    job_id = services.new_job({**SIX, "privacy": "standard"})
    # Without a consumer, one step runs here: prepare and submit, then the poll is scheduled.
    services.journey.advance(job_id)
    job = services.store.get_job(job_id)
    assert job is not None and job.proxy_key is not None and job.state == JobState.SUBMITTED.value
    tampered = bytearray(job.proxy_key)
    tampered[-1] ^= 0x01
    with services.store.db.write() as session:
        session.execute(
            text("UPDATE jobs SET proxy_key = :key WHERE id = :id"), {"key": bytes(tampered), "id": job_id}
        )
    consumer_for(services)
    assert services.wait_for(job_id, {JobState.COMPLETED, JobState.FAILED}) == "FAILED"
    job = services.store.get_job(job_id)
    assert job is not None
    assert job.error is not None and "FINALIZING" in job.error and "does not open" in job.error
    assert job.result is None


def test_the_cloud_received_exactly_the_contract_and_the_audit_hashed_those_bytes(
    cloud_settings: Settings, cloud_process: CloudServer, consumer_for: Any
) -> None:
    services = build(cloud_settings)
    consumer_for(services)
    job_id = services.complete(SIX)  # the deployment's default level
    view = services.store.view(job_id)
    assert view is not None and view.job.program is not None
    token = view.remote_tasks[0].client_token
    lines = (cloud_process.data_dir / "received.log").read_bytes().split(b"\n")
    bodies = [line for line in lines if line.startswith(b"{") and token.encode() in line]
    assert len(bodies) == 1  # submitted once
    body = bodies[0]
    document = json.loads(body)
    assert set(document) == {"device", "program", "shots", "client_token"}
    assert document["program"] == view.job.program  # the obfuscated circuit, byte for byte
    assert (document["shots"], document["client_token"]) == (SIX["shots"], token)
    assert body == json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    entries = [json.loads(line) for line in cloud_settings.audit_path.read_text().splitlines()]
    # The note starts with the route's name ("submission"); a reused connection adds "; kept-alive …".
    posted = [e for e in entries if e["job_id"] == job_id and e["note"].split("; ")[0] == "submission"]
    assert len(posted) == 1
    assert (posted[0]["sha256"], posted[0]["size"]) == (hashlib.sha256(body).hexdigest(), len(body))
    assert (posted[0]["tls_version"], posted[0]["tls_group"]) == ("TLSv1.3", "X25519MLKEM768")
    assert view.job.result is not None
    link = view.job.result["quantum"]["link"]
    assert (link["tls_group"], link["post_quantum"]) == ("X25519MLKEM768", True)
