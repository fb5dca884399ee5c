"""The pipeline's steps: their order, μ and Σ estimated once per job, and old rows still readable."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from qhybrid.core.config import Settings
from qhybrid.domain.request import JobRequest
from qhybrid.domain.result import JobResult
from qhybrid.domain.states import JobState
from qhybrid.jobs import pipeline
from qhybrid.jobs.models import utcnow
from qhybrid.portfolio import data
from qhybrid.portfolio.data import load_sp500
from tests.support.journey import REQUEST, build


def test_the_steps_read_in_the_order_of_the_journey() -> None:
    names = [step.__name__ for step in pipeline.STEPS]
    assert names == [
        "estimate",
        "formulate",
        "obfuscate",
        "plan",
        "compile_program",
        "deobfuscate",
        "judge",
        "refine",
        "compare",
    ]


def test_moments_survive_storage_exactly() -> None:
    request = JobRequest.model_validate(REQUEST)
    moments = pipeline.estimate(request)
    back = pipeline.Moments.from_bytes(moments.to_bytes(), moments.names, None)
    assert np.array_equal(back.expected_returns, moments.expected_returns)
    assert np.array_equal(back.covariance, moments.covariance)
    with pytest.raises(ValueError, match="shapes"):
        pipeline.Moments.from_bytes(moments.to_bytes(), (*moments.names, "F"), None)


def _price_request() -> dict[str, Any]:
    names, prices, _ = load_sp500()
    columns = [names.index(t) for t in ("AAPL", "MSFT", "JPM", "XOM")]
    rows = prices[-120:, columns]
    return {
        "prices": {"assets": ["AAPL", "MSFT", "JPM", "XOM"], "values": rows.tolist()},
        "risk_aversion": 1.0,
        "budget": 2,
        "backend": "local",
        "shots": 256,
        "options": {"reps": 1, "seed": 11},
    }


def test_mu_and_sigma_are_estimated_once_per_job(
    cloud_settings: Settings, consumer_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = data.estimate

    def counted(*args: Any, **kwargs: Any) -> data.Estimate:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "estimate_moments", counted)
    services = build(cloud_settings)
    consumer_for(services)
    job_id = services.complete(_price_request())
    assert len(calls) == 1
    job = services.store.get_job(job_id)
    assert job is not None and job.result is not None and job.moments is not None
    result = JobResult.model_validate(job.result)
    assert result.estimate is not None and result.estimate.observations == 119


def test_a_job_stored_before_the_typed_contract_still_runs(
    cloud_settings: Settings, consumer_for: Any
) -> None:
    # Version 1 documents left options.maxiter null for "the default" and privacy null.
    old = {**REQUEST, "privacy": None, "options": {**REQUEST["options"], "maxiter": None}}
    services = build(cloud_settings)
    consumer_for(services)
    job, _ = services.store.create_job(
        job_id="00000000-0000-4000-8000-000000000001",
        request=old,
        request_hash="0" * 64,
        backend="local",
        shots=512,
        deadline_at=utcnow() + timedelta(hours=1),
        request_version=1,
    )
    services.queue.kick(job.id)
    assert services.wait_for(job.id, {JobState.COMPLETED, JobState.FAILED}) == "COMPLETED"
    done = services.store.get_job(job.id)
    assert done is not None and done.result is not None
    assert done.result["quantum"]["qaoa"]["spec"]["maxiter"] == 100
    assert done.result["quantum"]["privacy"]["level"] == Settings().privacy_default
