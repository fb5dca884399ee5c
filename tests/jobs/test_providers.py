"""The same portfolio job through every local provider, and the worker against a faulty cloud.

Providers: the emulated cloud (``local``), Braket's local simulator (``braket-local``) and
qiskit-ibm-runtime's local testing mode with a fake Heron device (``ibm-local:FakeTorino``), all
through the real journey, with a real Huey consumer. Faults come from the emulated cloud's own
fault injection (``PUT /v1/admin/faults``), over HTTPS.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from qiskit import qasm3

from qhybrid.core.config import Settings
from qhybrid.domain.states import JobState, TaskState
from qhybrid.jobs.models import utcnow
from qhybrid.portfolio.baselines import exact
from tests.support.cloud import CloudServer, start_cloud
from tests.support.journey import REQUEST, build, formulation_of, on

pytestmark = pytest.mark.integration


def program_respects(program: str, basis: set[str], edges: set[tuple[int, int]] | None) -> None:
    circuit = qasm3.loads(program)
    for instruction in circuit.data:
        name = instruction.operation.name
        if name in ("measure", "barrier"):
            continue
        assert name in basis, f"{name} not in {sorted(basis)}"
        if len(instruction.qubits) == 2 and edges is not None:
            a, b = (circuit.find_bit(q).index for q in instruction.qubits)
            assert (a, b) in edges or (b, a) in edges, f"{name} on ({a}, {b}) is not a device edge"


@pytest.mark.parametrize("backend", ["local", "braket-local", "ibm-local:FakeTorino"])
def test_the_same_job_on_every_local_provider(
    backend: str, cloud_settings: Settings, consumer_for: Any
) -> None:
    services = build(cloud_settings.model_copy(update={"poll_initial_seconds": 0.2}))
    consumer_for(services)
    request = {**REQUEST, "backend": backend}
    job_id = services.new_job(request)
    services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.COMPLETED, JobState.FAILED}, timeout=120) == "COMPLETED"
    view = services.store.view(job_id)
    assert view is not None and view.job.result is not None
    result = view.job.result
    assert result["source"] in ("quantum", "quantum+refinement"), result.get("fallback")
    assert result["quantum"]["backend"] == backend
    optimum = exact(formulation_of(request))
    assert result["objective"] == pytest.approx(optimum.objective, rel=1e-12)
    # The quantum best is a real sample: feasible and within reach of the optimum on 5 assets.
    assert result["quantum_best"]["gap"] < 0.5
    assert view.remote_tasks[-1].state == TaskState.COMPLETED.value
    # The stored program is what went out; it only uses the device's gates and edges.
    target = services.backends.get(backend).target()
    assert view.job.program is not None
    edges = None
    if target.qiskit_target is not None:
        coupling = target.qiskit_target.build_coupling_map()
        edges = None if coupling is None else {tuple(e) for e in coupling.get_edges()}
    basis = set(target.basis_gates) - {"measure"}
    if target.qiskit_target is not None and backend.startswith("ibm"):
        basis = set(target.qiskit_target.operation_names) - {"measure"}
    program_respects(view.job.program, basis, edges)
    circuit = result["quantum"]["circuit"]
    if backend.startswith("ibm"):
        # Five assets plus the decoy qubits of the default privacy level, laid out on Torino.
        sent = result["quantum"]["qubits"] + 0
        assert circuit["layout"] is not None and len(circuit["layout"]) == circuit["logical_qubits"] >= sent
        assert 0.0 < circuit["estimated_success"] < 1.0
    assert view.job.cost is not None and view.job.cost["actual"] == 0.0
    link = result["quantum"]["link"]
    if backend == "local":
        # The emulated cloud is reached through the gateway: TLS 1.3 with the hybrid PQ group.
        assert (link["tls_version"], link["tls_group"], link["post_quantum"]) == (
            "TLSv1.3",
            "X25519MLKEM768",
            True,
        )
        entries = [json.loads(line) for line in services.settings.audit_path.read_text().splitlines()]
        mine = [e for e in entries if e["job_id"] == job_id]
        assert mine and all(e["tls_group"] == "X25519MLKEM768" for e in mine)
        assert any(e["method"] == "POST" and e["path"] == "/v1/tasks" and e["size"] > 0 for e in mine)
        # The poll that saw COMPLETED carried the counts: no request for the result route.
        polls = [e["path"] for e in mine if e["method"] == "GET" and e["path"].startswith("/v1/tasks/")]
        assert polls and all(path.endswith("?include=result") for path in polls)
    else:
        assert link == {"transport": "local process (no network)"}


# ------------------------------------------------------------------------------------ faults


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudServer]:
    server = start_cloud(tmp_path_factory.mktemp("faulty"), name="faulty", queue_delay=0.2, run_delay=0.2)
    yield server
    server.stop()


def arm(cloud: CloudServer, rules: list[dict[str, Any]]) -> None:
    with cloud.client() as http:
        http.put("/v1/admin/faults", json=rules).raise_for_status()


def remaining(cloud: CloudServer) -> list[dict[str, Any]]:
    with cloud.client() as http:
        rules: list[dict[str, Any]] = http.get("/v1/admin/faults").json()
        return rules


def test_transient_faults_are_retried_and_the_job_completes(
    faulty: CloudServer, settings: Settings, consumer_for: Any
) -> None:
    arm(
        faulty,
        [
            {"match": "GET /v1/devices/*", "fault": "503", "count": 1, "retry_after": 1},
            {"match": "POST /v1/tasks", "fault": "429", "count": 2, "retry_after": 1},
            {"match": "GET /v1/tasks/*", "fault": "drop", "count": 1},
            # The poll that sees COMPLETED carries the result (?include=result): no result request
            # to fault, so the second poll gets the 500.
            {"match": "GET /v1/tasks/*", "fault": "500", "count": 1},
        ],
    )
    services = build(on(settings, faulty).model_copy(update={"max_step_retries": 6}))
    consumer_for(services)
    job_id = services.new_job(fallback=False)
    services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.COMPLETED, JobState.FAILED}, timeout=90) == "COMPLETED"
    assert remaining(faulty) == []  # every injected fault was met
    job = services.store.get_job(job_id)
    assert job is not None and job.result is not None
    assert job.result["source"] in ("quantum", "quantum+refinement")
    row = services.store.remote_task(job_id, 1)
    assert row is not None
    # Two 429s refused the POST before the submission logic; the third created the task.
    assert faulty.submissions()[row.client_token] == 1


def test_a_response_lost_after_the_task_was_created_never_submits_twice(
    faulty: CloudServer, settings: Settings, consumer_for: Any
) -> None:
    # The cloud creates the task, then the connection drops before the worker hears the task id:
    # the worker retries, finds the task by its token and does not POST again.
    arm(faulty, [{"match": "POST /v1/tasks", "fault": "drop_after", "count": 1}])
    services = build(on(settings, faulty))
    consumer_for(services)
    job_id = services.new_job(fallback=False)
    services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.COMPLETED, JobState.FAILED}, timeout=60) == "COMPLETED"
    row = services.store.remote_task(job_id, 1)
    assert row is not None and row.task_id is not None
    assert faulty.submissions()[row.client_token] == 1
    view = services.store.view(job_id)
    assert view is not None and len(view.remote_tasks) == 1


def test_a_provider_that_fails_every_task_ends_in_the_marked_classical_fallback(
    faulty: CloudServer, settings: Settings, consumer_for: Any
) -> None:
    arm(faulty, [{"fault": "task_failed", "count": 3}])
    services = build(on(settings, faulty).model_copy(update={"max_remote_attempts": 3}))
    consumer_for(services)
    job_id = services.new_job()
    services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.COMPLETED, JobState.FAILED}, timeout=90) == "COMPLETED"
    view = services.store.view(job_id)
    assert view is not None and view.job.result is not None
    result = view.job.result
    assert result["source"] == "classical_fallback"
    assert "injected fault" in result["fallback"]["reason"]
    assert "after 3 attempts" in result["fallback"]["reason"]
    assert [t.attempt for t in view.remote_tasks] == [1, 2, 3]
    assert all(faulty.submissions()[t.client_token] == 1 for t in view.remote_tasks)
    optimum = exact(formulation_of(REQUEST))
    assert result["objective"] == pytest.approx(optimum.objective, rel=1e-12)


def test_cost_is_estimated_and_recorded(cloud_settings: Settings, consumer_for: Any) -> None:
    settings = cloud_settings.model_copy(update={"cloud_price_per_task": 0.3, "cloud_price_per_shot": 0.01})
    services = build(settings)
    consumer_for(services)
    estimate = {"currency": "USD", "estimated": 0.3 + 0.01 * 512, "actual": None}
    job, _ = services.store.create_job(
        job_id=str(uuid.uuid4()),
        request=REQUEST,
        request_hash="h",
        backend="local",
        shots=512,
        deadline_at=utcnow() + timedelta(hours=1),
        cost=estimate,
    )
    services.queue.kick(job.id)
    assert services.wait_for(job.id, {JobState.COMPLETED, JobState.FAILED}) == "COMPLETED"
    done = services.store.get_job(job.id)
    assert done is not None and done.cost is not None
    assert done.cost["estimated"] == pytest.approx(5.42)
    assert done.cost["actual"] == pytest.approx(0.3 + 0.01 * 512)
