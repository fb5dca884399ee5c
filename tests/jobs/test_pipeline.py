"""The pipeline's steps: their order, μ and Σ estimated once per job, and old rows still readable."""

from __future__ import annotations

from datetime import UTC, timedelta
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
        "mitigate",
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
    # Every completed quantum job says what the circuit contributed, beside references of the same shots.
    quantum = result.quantum
    assert quantum is not None and quantum.qaoa is not None and quantum.qaoa.spec.mixer == "xy-warm"
    contribution = quantum.contribution
    assert contribution is not None
    rows = (contribution.circuit, contribution.start_state, contribution.rounding, contribution.annealing)
    assert [row.shots for row in rows] == [256] * 4
    # The XY mixers and both references never leave the budget.
    assert [row.feasible_share for row in rows] == [1.0] * 4
    # The emulated cloud reports the seconds its device spent on the task, as providers report usage.
    assert contribution.annealing.steps > 0 and contribution.annealing.time_source == "provider_usage"
    assert contribution.verdict.startswith("the circuit")
    assert quantum.readout is not None and not quantum.readout.applied


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


def test_the_variables_labels_and_the_deployments_noise_key(tmp_path: Any) -> None:
    import base64
    import secrets
    import stat

    from qhybrid.portfolio.lots import LotsProblem
    from qhybrid.portfolio.selection import SelectionProblem

    request = JobRequest.model_validate(REQUEST)
    moments = pipeline.estimate(request)
    selection = pipeline.formulate(request, moments)
    assert isinstance(selection, SelectionProblem)
    assert pipeline.variable_labels(selection) == moments.names
    lots = LotsProblem(
        moments.names,
        moments.expected_returns,
        moments.covariance,
        1.0,
        6,
        np.zeros(len(moments.names), dtype=np.int64),
        np.full(len(moments.names), 3, dtype=np.int64),
    )
    labels = pipeline.variable_labels(lots)
    assert len(labels) == lots.num_variables == len(set(labels))
    assert all(label.split("/")[0] in moments.names for label in labels)
    # The embedded default makes the key once, private; the setting wins when given.
    settings = Settings(data_dir=tmp_path)
    key = pipeline.noise_key_of(settings)
    assert stat.S_IMODE(settings.noise_key_path.stat().st_mode) == 0o600
    assert np.array_equal(key.normals("f", ["a"]), pipeline.noise_key_of(settings).normals("f", ["a"]))
    given = Settings(data_dir=tmp_path, privacy_noise_key=base64.b64encode(secrets.token_bytes(32)).decode())
    assert not np.array_equal(key.normals("f", ["a"]), pipeline.noise_key_of(given).normals("f", ["a"]))


def test_readout_mitigation_follows_the_device_and_the_option(cloud_settings: Settings) -> None:
    from qhybrid.backends.ibm import fake_backend, ibm_target

    request = JobRequest.model_validate(_price_request())
    preparation = pipeline.prepare(
        request, ibm_target(fake_backend("FakeTorino")), seed=3, settings=cloud_settings
    )
    prepared = preparation.program.prepared
    errors = prepared.circuit.readout_errors
    # FakeTorino publishes a readout error for every measured qubit.
    assert errors is not None and len(errors) == prepared.privacy.qubits_sent and min(errors) > 0.0
    width = prepared.privacy.qubits_sent
    peak, neighbours = "1" * 2 + "0" * (width - 2), ["0" + "1" + "0" * (width - 2), "1" + "0" * (width - 1)]
    counts = {peak: 900, neighbours[0]: 50, neighbours[1]: 50}
    mitigated, report = pipeline.mitigate(request, prepared, counts)
    assert report.applied and report.mean_error == pytest.approx(float(np.mean(errors)))
    assert sum(mitigated.values()) == 1000 and mitigated[peak] > 900
    off = JobRequest.model_validate({**_price_request(), "options": {"readout_mitigation": False}})
    unchanged, report = pipeline.mitigate(off, prepared, counts)
    assert unchanged == counts and not report.applied and "readout_mitigation" in report.reason


def test_xy_warm_angles_aim_at_the_true_problem_behind_the_noise() -> None:
    from qhybrid.portfolio.data import sp500_problem
    from qhybrid.quantum.engine import final_distribution, plan_qaoa
    from qhybrid.quantum.spec import QaoaSpec

    problem = sp500_problem(8, 4, seed=2)
    spec = QaoaSpec(mixer="xy-warm", reps=1)
    obfuscated = pipeline.obfuscate(problem, spec, "standard")
    sent = obfuscated.sent

    def true_mean(plan: Any) -> float:
        bits, probabilities = final_distribution(sent.ising, plan)
        true = obfuscated.key.true_bits(bits)
        return float(probabilities @ problem.objective(true))

    aimed = pipeline.plan(obfuscated, spec, seed=0)
    on_the_noise = plan_qaoa(
        sent.ising, spec, seed=0, hamming_weight=sent.hamming_weight, warm_start=sent.warm_start
    )
    # The true objective is what the angles were chosen for, so it can only be better there ...
    assert true_mean(aimed) <= true_mean(on_the_noise) + 1e-12
    # ... and never worse than the start state (γ = β = 0) on it.
    assert aimed.simulated["objective"] <= aimed.simulated["start_objective"] + 1e-12


def test_the_annealing_reference_gets_the_circuits_sampling_time() -> None:
    from datetime import datetime

    from qhybrid.jobs.journey import _sampling_seconds
    from qhybrid.jobs.models import RemoteTask

    submitted = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    done = datetime(2026, 1, 1, 12, 0, 3, 500000, tzinfo=UTC)
    # The provider's billed seconds win (IBM reports them) ...
    billed = RemoteTask(details={"usage_seconds": 0.8}, submitted_at=submitted, updated_at=done)
    assert _sampling_seconds(billed) == (0.8, "provider_usage")
    # ... else the task's wall time as the worker saw it ...
    timed = RemoteTask(details={"shots": 10}, submitted_at=submitted, updated_at=done)
    assert _sampling_seconds(timed) == (3.5, "task_wall_time")
    # ... and nothing when the submission time is unknown (the budget is then the cap).
    assert _sampling_seconds(RemoteTask(details=None, submitted_at=None, updated_at=done))[0] is None
