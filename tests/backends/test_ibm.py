"""IBM adapters: a fake backend end to end, the Qiskit Runtime adapter against a test double.

Nothing real can run here (no IBM account, no network), so :class:`IBMBackend` is driven through
``RuntimeServiceDouble``, a stand-in for ``QiskitRuntimeService`` with the same method names, and
the SDK's own exception types. ``ibm-local:*`` tests run the real SDK in local testing mode.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from qiskit import QuantumCircuit
from qiskit.primitives.containers import BitArray, DataBin, PrimitiveResult, SamplerPubResult
from qiskit.providers import JobStatus
from qiskit_ibm_runtime.api.exceptions import RequestsApiError
from qiskit_ibm_runtime.exceptions import (
    IBMNotAuthorizedError,
    IBMRuntimeError,
    RuntimeInvalidStateError,
    RuntimeJobNotFound,
)
from qiskit_ibm_runtime.fake_provider import FakeBrisbane, FakeTorino

from qhybrid.backends.base import PermanentBackendError, TransientBackendError
from qhybrid.backends.detached import DetachedTaskRunner
from qhybrid.backends.ibm import (
    IBM_STATES,
    IBMBackend,
    IBMFakeBackend,
    counts_bit0_first,
    ibm_error,
    ibm_target,
    normalise_ibm_status,
    token_tag,
)
from qhybrid.backends.pricing import IBM_PRICING, estimate_qpu_seconds
from qhybrid.domain.states import TERMINAL_TASK_STATES, TaskState
from qhybrid.gateway.audit import AuditLog
from qhybrid.gateway.context import current_job
from qhybrid.quantum.circuit import transpile_for
from qhybrid.quantum.qasm import ALLOWED_GATES, to_openqasm3

# ----------------------------------------------------------------------------- local testing mode


@pytest.mark.integration
def test_fake_torino_end_to_end_bit_zero_first(tmp_path: Path) -> None:
    backend = IBMFakeBackend(
        name="ibm-local:FakeTorino",
        runner=DetachedTaskRunner(tmp_path / "local-tasks"),
        fake_name="FakeTorino",
    )
    target = backend.target()
    assert target.provider == "ibm"
    assert target.num_qubits == 133
    assert "cz" in target.basis_gates and set(target.basis_gates) <= ALLOWED_GATES
    assert target.coupling_map and all(len(edge) == 2 for edge in target.coupling_map)
    assert target.qiskit_target is not None

    # Bit 0 is flipped, bits 1 and 2 are a Bell pair: bit 0 first, "100" and "111".
    logical = QuantumCircuit(3, 3)
    logical.x(0)
    logical.h(1)
    logical.cx(1, 2)
    logical.measure([0, 1, 2], [0, 1, 2])
    transpiled, _ = transpile_for(logical, target, seed=5)
    program = to_openqasm3(transpiled)

    task_id = backend.submit(program, 500, "torino-token")
    assert backend.submit(program, 500, "torino-token") == task_id
    assert backend.find_task("torino-token") == task_id
    deadline = time.monotonic() + 120
    while (status := backend.status(task_id)).state not in TERMINAL_TASK_STATES:
        assert time.monotonic() < deadline, "the fake backend did not finish"
        time.sleep(0.2)
    assert status.state is TaskState.COMPLETED, status.message
    result = backend.result(task_id)
    assert result.shots == 500
    good = result.counts.get("100", 0) + result.counts.get("111", 0)
    assert good >= 0.8 * 500, result.counts
    assert min(result.counts.get("100", 0), result.counts.get("111", 0)) > 100
    assert backend.pricing() is None
    assert backend.estimated_seconds(1000) == 0.0


def test_ecr_devices_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    backend = IBMFakeBackend(
        name="ibm-local:FakeBrisbane", runner=DetachedTaskRunner(tmp_path), fake_name="FakeBrisbane"
    )
    with pytest.raises(PermanentBackendError, match=r"\['ecr'\].*FakeTorino, FakeFez"):
        backend.target()
    with pytest.raises(PermanentBackendError, match="ecr"):
        backend.submit("OPENQASM 3.0;\n", 10, "t")
    assert not list(tmp_path.iterdir())


def test_unknown_fake_backend_lists_the_valid_names(tmp_path: Path) -> None:
    with pytest.raises(PermanentBackendError, match=r"unknown IBM fake backend 'FakeNowhere'.*FakeTorino"):
        IBMFakeBackend(
            name="ibm-local:FakeNowhere", runner=DetachedTaskRunner(tmp_path), fake_name="FakeNowhere"
        )
    with pytest.raises(PermanentBackendError, match="unknown IBM fake backend"):
        IBMFakeBackend(name="x", runner=DetachedTaskRunner(tmp_path), fake_name="QiskitRuntimeService")


# ----------------------------------------------------------------------------- status and counts


@pytest.mark.parametrize("status", list(JobStatus))
def test_enum_statuses_from_local_testing_mode(status: JobStatus) -> None:
    normalised = normalise_ibm_status(status, "boom")
    assert normalised.provider_state == status.name
    assert normalised.state is IBM_STATES[status.name]
    assert normalised.message == ("boom" if normalised.state is TaskState.FAILED else None)


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("INITIALIZING", TaskState.QUEUED),
        ("QUEUED", TaskState.QUEUED),
        ("VALIDATING", TaskState.QUEUED),
        ("RUNNING", TaskState.RUNNING),
        ("DONE", TaskState.COMPLETED),
        ("ERROR", TaskState.FAILED),
        ("CANCELLED", TaskState.CANCELLED),
        ("Completed", TaskState.COMPLETED),
        ("Failed", TaskState.FAILED),
        ("CANCELLED - RAN TOO LONG", TaskState.FAILED),
    ],
)
def test_string_statuses_from_real_jobs(status: str, state: TaskState) -> None:
    assert normalise_ibm_status(status).state is state


def test_unknown_status_is_refused() -> None:
    with pytest.raises(PermanentBackendError, match="unknown job status"):
        normalise_ibm_status("TELEPORTING")


def test_counts_are_turned_bit_zero_first() -> None:
    assert counts_bit0_first({"001": 3, "110": 1, "0 01": 2}) == {"100": 5, "011": 1}


def test_qpu_seconds_estimate() -> None:
    assert estimate_qpu_seconds(0) == pytest.approx(2.0)
    assert estimate_qpu_seconds(1000, 50e-6, 250e-6) == pytest.approx(2.0 + 1000 * 300e-6)
    assert IBM_PRICING.per_second == pytest.approx(1.6)


# ----------------------------------------------------------------------------- runtime test double


class JobDouble:
    """Stands for ``RuntimeJobV2``: string statuses, ``result()``, ``cancel()``."""

    def __init__(self, job_id: str, tags: list[str], status: str = "QUEUED") -> None:
        self._job_id = job_id
        self.tags = tags
        self.status_value = status
        self.error: str | None = None
        self.counts: dict[str, int] = {}
        self.cancel_error: Exception | None = None
        self.cancelled = 0

    def job_id(self) -> str:
        return self._job_id

    def status(self) -> str:
        return self.status_value

    def error_message(self) -> str | None:
        return self.error

    def result(self) -> PrimitiveResult:
        bits = BitArray.from_counts(self.counts, num_bits=len(next(iter(self.counts))))
        return PrimitiveResult([SamplerPubResult(data=DataBin(c=bits), metadata={})])

    def usage(self) -> float:
        return 3.5

    def cancel(self) -> None:
        self.cancelled += 1
        if self.cancel_error is not None:
            raise self.cancel_error
        self.status_value = "CANCELLED"


class SamplerDouble:
    """Stands for ``SamplerV2``: records what it ran and registers the job with the service."""

    def __init__(self, service: RuntimeServiceDouble, backend: Any, options: dict[str, Any]) -> None:
        self.service = service
        self.backend = backend
        self.options = options

    def run(self, pubs: list[QuantumCircuit], *, shots: int) -> JobDouble:
        self.service.runs.append((self.backend, self.options, pubs, shots))
        job = JobDouble(f"job-{len(self.service.jobs_by_id) + 1}", self.options["environment"]["job_tags"])
        self.service.jobs_by_id[job.job_id()] = job
        return job


class RuntimeServiceDouble:
    """Stands for ``QiskitRuntimeService``: ``backend``, ``jobs(job_tags=...)``, ``job(id)``."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.jobs_by_id: dict[str, JobDouble] = {}
        self.runs: list[tuple[Any, dict[str, Any], list[QuantumCircuit], int]] = []
        self.fail_next: Exception | None = None

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error

    def backend(self, name: str) -> Any:
        self._maybe_fail()
        return self.device

    def jobs(self, *, job_tags: list[str], limit: int) -> list[JobDouble]:
        self._maybe_fail()
        found = [job for job in self.jobs_by_id.values() if set(job_tags) <= set(job.tags)]
        return found[:limit]

    def job(self, job_id: str) -> JobDouble:
        self._maybe_fail()
        if job_id not in self.jobs_by_id:
            raise RuntimeJobNotFound(f"Job not found: {job_id}")
        return self.jobs_by_id[job_id]

    def sampler_factory(self) -> Callable[[Any, dict[str, Any]], SamplerDouble]:
        return lambda backend, options: SamplerDouble(self, backend, options)


@pytest.fixture(scope="module")
def torino_program() -> str:
    circuit = QuantumCircuit(2, 2)
    circuit.x(0)
    circuit.measure([0, 1], [0, 1])
    transpiled, _ = transpile_for(circuit, ibm_target(FakeTorino()), seed=1)
    return to_openqasm3(transpiled)


def make_backend(service: RuntimeServiceDouble, **overrides: Any) -> IBMBackend:
    settings: dict[str, Any] = {
        "name": "ibm:ibm_torino",
        "backend_name": "ibm_torino",
        "token": "secret-api-key",
        "max_execution_time": 120,
        "service": service,
        "sampler_factory": service.sampler_factory(),
    }
    return IBMBackend(**{**settings, **overrides})


def test_double_submit_tags_the_job_and_finds_it_instead_of_resubmitting(torino_program: str) -> None:
    service = RuntimeServiceDouble(FakeTorino())
    backend = make_backend(service)
    assert backend.find_task("tok-1") is None
    job_id = backend.submit(torino_program, 256, "tok-1")
    assert len(service.runs) == 1
    device, options, pubs, shots = service.runs[0]
    assert device is service.device
    assert options["environment"]["job_tags"] == ["qhybrid", token_tag("tok-1")]
    assert options["max_execution_time"] == 120
    assert shots == 256 and pubs[0].num_qubits == 133

    # A retried submission (worker crash after submitting) finds the tagged job.
    assert backend.submit(torino_program, 256, "tok-1") == job_id
    assert len(service.runs) == 1
    assert make_backend(service).find_task("tok-1") == job_id
    assert "secret-api-key" not in repr(backend)


def test_double_status_result_and_cancel(torino_program: str) -> None:
    service = RuntimeServiceDouble(FakeTorino())
    backend = make_backend(service)
    job_id = backend.submit(torino_program, 100, "tok-2")
    job = service.jobs_by_id[job_id]
    for raw, state in (("QUEUED", TaskState.QUEUED), ("RUNNING", TaskState.RUNNING)):
        job.status_value = raw
        assert backend.status(job_id).state is state
        with pytest.raises(TransientBackendError, match="no result yet"):
            backend.result(job_id)
    job.status_value = "DONE"
    job.counts = {"01": 97, "11": 3}  # Qiskit order: bit 0 last
    result = backend.result(job_id)
    assert result.counts == {"10": 97, "11": 3}
    assert result.shots == 100
    assert result.metadata["usage_seconds"] == 3.5

    # Cancelling a finished job: IBM answers 409, which is success for us.
    try:
        raise RequestsApiError("409 Client Error: Conflict", status_code=409)
    except RequestsApiError:
        try:
            raise RuntimeInvalidStateError("Job cannot be cancelled") from None
        except RuntimeInvalidStateError as error:
            job.cancel_error = error
    backend.cancel(job_id)
    assert job.cancelled == 1

    job.status_value = "ERROR"
    job.error = "Error code 1517; circuit too deep"
    status = backend.status(job_id)
    assert status.state is TaskState.FAILED and status.message == "Error code 1517; circuit too deep"
    with pytest.raises(PermanentBackendError, match="circuit too deep"):
        backend.result(job_id)


def test_double_unknown_job_is_permanent() -> None:
    backend = make_backend(RuntimeServiceDouble(FakeTorino()))
    with pytest.raises(PermanentBackendError, match="RuntimeJobNotFound"):
        backend.status("no-such-job")


def _wrapped(status_code: int) -> IBMRuntimeError:
    """An error as the SDK raises it: the HTTP error re-raised ``from None``."""
    try:
        raise RequestsApiError(f"'{status_code} Error: stubbed'", status_code=status_code)
    except RequestsApiError:
        try:
            raise IBMRuntimeError("Failed to retrieve job") from None
        except IBMRuntimeError as error:
            return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_wrapped(429), TransientBackendError),
        (_wrapped(500), TransientBackendError),
        (_wrapped(503), TransientBackendError),
        (_wrapped(401), PermanentBackendError),
        (_wrapped(403), PermanentBackendError),
        (_wrapped(400), PermanentBackendError),
        (RequestsApiError("'429 Client Error: Too Many Requests'", status_code=429), TransientBackendError),
        (IBMRuntimeError("Failed: '502 Server Error: Bad Gateway for url'"), TransientBackendError),
        (IBMNotAuthorizedError("bad token"), PermanentBackendError),
        (RuntimeJobNotFound("Job not found"), PermanentBackendError),
        (requests.ConnectionError("connection reset"), TransientBackendError),
        (requests.Timeout("read timed out"), TransientBackendError),
    ],
)
def test_double_errors_are_sorted(error: Exception, expected: type[Exception]) -> None:
    assert isinstance(ibm_error(error, "x"), expected)
    service = RuntimeServiceDouble(FakeTorino())
    backend = make_backend(service)
    service.fail_next = error
    with pytest.raises(expected):
        backend.find_task("tok")


def test_double_ecr_device_is_refused(torino_program: str) -> None:
    service = RuntimeServiceDouble(FakeBrisbane())
    backend = make_backend(service)
    with pytest.raises(PermanentBackendError, match="ecr"):
        backend.target()
    with pytest.raises(PermanentBackendError, match="ecr"):
        backend.submit(torino_program, 10, "tok")
    assert service.runs == []


def test_double_pricing_and_estimate() -> None:
    backend = make_backend(RuntimeServiceDouble(FakeTorino()))
    assert backend.pricing() is IBM_PRICING
    backend.target()  # loads the device, whose repetition delay the estimate uses
    assert backend.estimated_seconds(1000, 100e-6) == pytest.approx(2.0 + 1000 * 350e-6)


class BatchDouble:
    """Stands for ``qiskit_ibm_runtime.Batch``: a status IBM reports for the batch."""

    def __init__(self, backend: Any, max_time: int) -> None:
        self.backend = backend
        self.max_time = max_time
        self.status_value = "In progress, accepting new jobs"

    def status(self) -> str:
        return self.status_value


def test_double_batch_mode_shares_one_batch_until_it_closes(torino_program: str) -> None:
    service = RuntimeServiceDouble(FakeTorino())
    batches: list[BatchDouble] = []

    def batch_factory(device: Any, max_time: int) -> BatchDouble:
        batches.append(BatchDouble(device, max_time))
        return batches[-1]

    backend = make_backend(service, execution_mode="batch", batch_max_time=900, batch_factory=batch_factory)
    backend.submit(torino_program, 64, "batch-tok-1")
    backend.submit(torino_program, 64, "batch-tok-2")
    assert len(batches) == 1 and batches[0].max_time == 900
    assert [run[0] for run in service.runs] == [batches[0], batches[0]]  # the sampler ran in the batch
    batches[0].status_value = "Closed"
    backend.submit(torino_program, 64, "batch-tok-3")
    assert len(batches) == 2
    assert service.runs[-1][0] is batches[1]
    with pytest.raises(ValueError, match="execution_mode"):
        IBMBackend(name="x", backend_name="y", execution_mode="session")


def test_double_submission_is_audited_first_and_not_made_when_the_audit_fails(
    torino_program: str, tmp_path: Path
) -> None:
    service = RuntimeServiceDouble(FakeTorino())
    log = AuditLog(tmp_path / "egress.log")
    backend = make_backend(service, audit=log)
    with current_job("job-7"):
        backend.submit(torino_program, 64, "tok-a")
    (entry,) = [json.loads(line) for line in log.path.read_text().splitlines()]
    program = torino_program.encode()
    assert (entry["sha256"], entry["size"]) == (hashlib.sha256(program).hexdigest(), len(program))
    assert (entry["job_id"], entry["method"]) == ("job-7", "SDK")
    assert entry["tls_group"] == "classical (no ML-KEM in stdlib ssl)"
    assert "secret-api-key" not in log.path.read_text()
    # Fail closed: an audit that cannot be written means no SDK call, and a retry later.
    broken = make_backend(service, audit=AuditLog("/dev/full"))
    with pytest.raises(TransientBackendError, match="audit"):
        broken.submit(torino_program, 64, "tok-b")
    assert len(service.runs) == 1
