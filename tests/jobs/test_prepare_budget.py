"""A job whose PREPARING takes longer than QHYBRID_PREPARE_SECONDS answers classically, or fails."""

from __future__ import annotations

from typing import Any

from qhybrid.core.config import Settings
from qhybrid.domain.states import JobState
from tests.support.journey import build


def test_preparation_past_its_budget_falls_back_with_the_reason(
    cloud_settings: Settings, consumer_for: Any
) -> None:
    services = build(cloud_settings.model_copy(update={"prepare_seconds": 1e-6}))
    consumer_for(services)
    job_id = services.new_job()
    services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.COMPLETED, JobState.FAILED}) == "COMPLETED"
    view = services.store.view(job_id)
    assert view is not None and view.job.result is not None
    assert view.job.result["source"] == "classical_fallback"
    reason = view.job.result["fallback"]["reason"]
    assert "PREPARING (QHYBRID_PREPARE_SECONDS) took longer than 1e-06 s" in reason
    assert view.job.proxy_key is None and view.job.program is None  # nothing half-prepared is kept


def test_without_fallback_the_job_fails_with_the_reason(cloud_settings: Settings, consumer_for: Any) -> None:
    services = build(cloud_settings.model_copy(update={"prepare_seconds": 1e-6}))
    consumer_for(services)
    job_id = services.new_job(fallback=False)
    services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.COMPLETED, JobState.FAILED}) == "FAILED"
    job = services.store.get_job(job_id)
    assert job is not None and job.error is not None
    assert "QHYBRID_PREPARE_SECONDS" in job.error
