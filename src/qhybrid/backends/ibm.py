"""IBM Quantum: fake backends on this machine, and real devices through Qiskit Runtime.

Two classes, one per mode:

* :class:`IBMFakeBackend` (backend names ``ibm-local:<FakeName>``, e.g. ``ibm-local:FakeTorino``):
  qiskit-ibm-runtime's local testing mode, ``SamplerV2(mode=<fake backend>)``, which simulates
  the device's noise model with Aer. The tasks run in detached processes through
  :class:`~qhybrid.backends.detached.DetachedTaskRunner` so they survive a worker restart.
* :class:`IBMBackend`: a real device through ``QiskitRuntimeService`` and ``SamplerV2`` in job
  mode. Runtime has no idempotency token, so the client token travels as a job tag: submission
  first looks for a job with that tag (a crashed earlier attempt) and only then submits. Task ids
  are job ids. Every request the SDK makes (sign-in, instance search, device, jobs, results,
  cancel) goes through the gateway's ``requests`` guard (:func:`qhybrid.gateway.sdk.install_requests_guard`,
  installed by the worker): allow-list, route table, header policy and audit before it is sent.
  The program is checked with the gateway's bounded grammar before the SDK converts it.

Devices: our programs carry only :data:`~qhybrid.quantum.qasm.ALLOWED_GATES`. Heron devices
(CZ: ``ibm_torino``, ``ibm_fez``, ``ibm_marrakesh``, ``ibm_kingston``; fakes ``FakeTorino``,
``FakeFez``, ``FakeMarrakesh``, ``FakeKingston``...) and the older CX devices work; Eagle devices,
whose only two-qubit gate is ECR (``ibm_brisbane``, ``FakeBrisbane``, ``FakeSherbrooke``...), are
refused because ECR cannot be written in the program format.

``SamplerV2`` is deprecated since qiskit-ibm-runtime 0.50 in favour of a client-side sampler; it
is still the documented way to run in local testing mode and with job tags, and its deprecation
warning is silenced here.
"""

from __future__ import annotations

import contextlib
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from qhybrid.backends.base import (
    BackendError,
    PermanentBackendError,
    QuantumBackend,
    TaskResult,
    TaskStatus,
    TransientBackendError,
)
from qhybrid.backends.detached import IBM_EXECUTOR_PREFIX, DetachedBackend, DetachedTaskRunner
from qhybrid.backends.pricing import (
    IBM_PRICING,
    estimate_qpu_seconds,
)
from qhybrid.domain.device import DeviceTarget, Pricing
from qhybrid.domain.states import TERMINAL_TASK_STATES, TaskState
from qhybrid.gateway.audit import AuditLog
from qhybrid.gateway.context import get_current_job
from qhybrid.gateway.egress import EgressAuditError, EgressPolicyError
from qhybrid.gateway.payload import PayloadError, validate_program
from qhybrid.gateway.sdk import IBM_JOB_TAG, IBM_TOKEN_TAG_PREFIX, audit_sdk_submission
from qhybrid.quantum.qasm import ALLOWED_GATES, TWO_QUBIT_GATES

_T = TypeVar("_T")

#: Job tag prefix carrying the client token (``qhybrid-token:<token>``); the gateway's route table
#: refuses any other.
TOKEN_TAG_PREFIX = IBM_TOKEN_TAG_PREFIX

#: Tag on every job we submit, to find them in the IBM console.
JOB_TAG = IBM_JOB_TAG

#: Every job status qiskit-ibm-runtime reports, normalised. Local testing mode returns the
#: ``qiskit.providers.JobStatus`` enum (whose names are used), real jobs return strings; the REST
#: API's own words (COMPLETED, FAILED...) are accepted as well. A job cancelled because it ran
#: past its maximum execution time counts as FAILED: nobody asked for that cancellation.
IBM_STATES: Mapping[str, TaskState] = {
    "INITIALIZING": TaskState.QUEUED,
    "QUEUED": TaskState.QUEUED,
    "VALIDATING": TaskState.QUEUED,
    "RUNNING": TaskState.RUNNING,
    "DONE": TaskState.COMPLETED,
    "COMPLETED": TaskState.COMPLETED,
    "ERROR": TaskState.FAILED,
    "FAILED": TaskState.FAILED,
    "CANCELLED": TaskState.CANCELLED,
    "CANCELLED - RAN TOO LONG": TaskState.FAILED,
}

#: Fake backends known to carry a two-qubit gate our programs can express, for error messages.
SUPPORTED_FAKE_BACKENDS = ("FakeTorino", "FakeFez", "FakeMarrakesh", "FakeKingston", "FakeAachen")


#: Job objects kept per adapter (they cache final statuses); the oldest go first.
_JOB_CACHE_SIZE = 1000

_HTTP_STATUS = re.compile(r"\b([1-5]\d\d) (?:Client|Server) Error\b")


# --------------------------------------------------------------------------- shared helpers


@contextmanager
def _quiet_sampler_deprecation() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*SamplerV2 class is deprecated.*", category=DeprecationWarning
        )
        yield


def token_tag(client_token: str) -> str:
    """The job tag that carries ``client_token``."""
    return f"{TOKEN_TAG_PREFIX}{client_token}"


def normalise_ibm_status(status: object, message: str | None = None) -> TaskStatus:
    """A job status, enum (local testing mode) or string (real jobs), as a :class:`TaskStatus`.

    Raises:
        PermanentBackendError: On a status this adapter does not know.
    """
    name = getattr(status, "name", None)
    provider_state = str(name if isinstance(name, str) else status).strip().upper()
    state = IBM_STATES.get(provider_state)
    if state is None:
        raise PermanentBackendError(f"IBM reported unknown job status {status!r}")
    return TaskStatus(
        state=state,
        provider_state=provider_state,
        message=message if state is TaskState.FAILED else None,
    )


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an SDK error, also when the SDK re-raised it ``from None``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "status_code", None)
        if isinstance(code, int) and code > 0:
            return code
        match = _HTTP_STATUS.search(str(current))
        if match:
            return int(match.group(1))
        # __context__ survives ``raise ... from None`` (only its display is suppressed).
        current = current.__cause__ or current.__context__
    return None


def ibm_error(exc: Exception, what: str) -> BackendError:
    """Sort a Qiskit Runtime failure into transient (retry later) and permanent ones.

    429 and 5xx answers and connection failures are transient; 401/403 and other 4xx answers,
    unknown jobs, bad input and bad credentials are permanent. An SDK error without any HTTP
    status is treated as transient: it is most often a network failure in disguise.
    """
    import requests
    from qiskit_ibm_runtime.exceptions import (
        IBMAccountError,
        IBMInputValueError,
        IBMNotAuthorizedError,
        RuntimeInvalidStateError,
        RuntimeJobFailureError,
        RuntimeJobNotFound,
    )

    text = f"IBM {what} failed: {type(exc).__name__}: {exc}"
    permanent = (
        RuntimeJobNotFound,
        RuntimeInvalidStateError,
        IBMNotAuthorizedError,
        IBMAccountError,
        RuntimeJobFailureError,
    )
    if isinstance(exc, permanent):
        return PermanentBackendError(text)
    status = _http_status(exc)
    if status is not None:
        if status == 429 or status >= 500:
            return TransientBackendError(text)
        if status >= 400:
            return PermanentBackendError(text)
    if isinstance(exc, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError):
        return TransientBackendError(text)
    if isinstance(exc, IBMInputValueError | ValueError | TypeError | KeyError):
        return PermanentBackendError(text)
    return TransientBackendError(text)


def ibm_target(backend: Any) -> DeviceTarget:
    """A :class:`DeviceTarget` for an IBM (or fake) backend, if our programs can use it.

    Raises:
        PermanentBackendError: If the device's two-qubit gates are none of ours (ECR devices).
    """
    qiskit_target = backend.target
    operations = set(qiskit_target.operation_names)
    basis = tuple(sorted(operations & ALLOWED_GATES))
    if not TWO_QUBIT_GATES & set(basis):
        two_qubit = sorted(
            name
            for name in operations
            if getattr(qiskit_target.operation_from_name(name), "num_qubits", 0) == 2
        )
        raise PermanentBackendError(
            f"IBM device {backend.name!r} has two-qubit gates {two_qubit}, which the program format "
            f"cannot carry (it has {sorted(TWO_QUBIT_GATES)}). Use a CZ (Heron) device such as "
            f"ibm_torino or ibm_fez, locally {', '.join(SUPPORTED_FAKE_BACKENDS)}, or an older CX device"
        )
    return DeviceTarget.from_qiskit(qiskit_target, name=str(backend.name), basis_gates=basis, provider="ibm")


def counts_bit0_first(counts: Mapping[str, int]) -> dict[str, int]:
    """Qiskit counts (classical bit 0 last) with bit 0 first."""
    merged: dict[str, int] = {}
    for outcome, count in counts.items():
        key = outcome.replace(" ", "")[::-1]
        merged[key] = merged.get(key, 0) + int(count)
    return merged


def _pub_counts(primitive_result: Any) -> dict[str, int]:
    """Counts of the ``c`` register of a one-pub Sampler result, bit 0 first."""
    data = primitive_result[0].data
    register = getattr(data, "c", None)
    if register is None:
        raise ValueError("the result has no classical register 'c'")
    return counts_bit0_first(register.get_counts())


# --------------------------------------------------------------------------- local mode


def fake_backend(name: str) -> Any:
    """A qiskit-ibm-runtime fake backend by class name (``FakeTorino``).

    Raises:
        PermanentBackendError: If there is no such fake backend; the message lists the valid names.
    """
    from qiskit_ibm_runtime import fake_provider
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    cls = getattr(fake_provider, name, None) if name.startswith("Fake") else None
    if not (isinstance(cls, type) and issubclass(cls, FakeBackendV2)):
        valid = sorted(
            attribute
            for attribute in dir(fake_provider)
            if attribute.startswith("Fake")
            and isinstance(getattr(fake_provider, attribute), type)
            and issubclass(getattr(fake_provider, attribute), FakeBackendV2)
        )
        raise PermanentBackendError(
            f"unknown IBM fake backend {name!r}; valid names: {', '.join(valid)} "
            f"(our programs need a CZ or CX device, e.g. {', '.join(SUPPORTED_FAKE_BACKENDS)})"
        )
    return cls()


def run_fake_backend(
    name: str, program: str, shots: int, *, seed: int | None = None
) -> tuple[dict[str, int], dict[str, object]]:
    """Run a program on a fake backend in local testing mode (the runner's ``ibm:`` executors).

    The program is already transpiled for the device, so it is passed as is (program qubit ``i``
    is physical qubit ``i``).

    Args:
        name: Fake backend class name, e.g. ``FakeTorino``.
        program: Canonical OpenQASM 3 text.
        shots: Number of shots.
        seed: Seed of Aer's sampling (reproducible counts); positive.

    Returns:
        Counts (bit 0 first) and metadata.
    """
    from qiskit import qasm3
    from qiskit_ibm_runtime import SamplerV2

    backend = fake_backend(name)
    circuit = qasm3.loads(program)
    options: dict[str, Any] = {}
    if seed:
        options["simulator"] = {"seed_simulator": int(seed)}
    with _quiet_sampler_deprecation():
        job = SamplerV2(mode=backend, options=options).run([circuit], shots=shots)
    counts = _pub_counts(job.result())
    return counts, {"backend": str(backend.name), "seed": seed, "local_job_id": str(job.job_id())}


class IBMFakeBackend(DetachedBackend):
    """A qiskit-ibm-runtime fake backend behind the task contract (``ibm-local:<FakeName>``).

    Args:
        name: The name requests use, e.g. ``ibm-local:FakeTorino``.
        runner: Runs the tasks in detached processes.
        fake_name: Fake backend class name in ``qiskit_ibm_runtime.fake_provider``.

    Raises:
        PermanentBackendError: If there is no such fake backend.
    """

    def __init__(self, *, name: str, runner: DetachedTaskRunner, fake_name: str) -> None:
        self._backend = fake_backend(fake_name)
        super().__init__(name=name, runner=runner, executor=f"{IBM_EXECUTOR_PREFIX}{fake_name}")
        self._target: DeviceTarget | None = None
        self._target_lock = threading.Lock()

    def target(self) -> DeviceTarget:
        """The fake device's Target, with its calibrated error rates.

        Raises:
            PermanentBackendError: If the device's two-qubit gate is not one of ours (ECR).
        """
        with self._target_lock:
            if self._target is None:
                self._target = ibm_target(self._backend)
            return self._target

    def submit(self, program: str, shots: int, client_token: str) -> str:
        """Run the program on the fake device in a detached process (same token, same task)."""
        self.target()  # refuse devices the program format cannot serve before doing anything
        return super().submit(program, shots, client_token)


# --------------------------------------------------------------------------- real mode


def _runtime_sampler(mode: Any, options: dict[str, Any]) -> Any:
    """``SamplerV2`` on ``mode``: a backend (job mode) or a ``Batch``."""
    from qiskit_ibm_runtime import SamplerV2

    with _quiet_sampler_deprecation():
        return SamplerV2(mode=mode, options=options)


def _runtime_batch(backend: Any, max_time: int) -> Any:
    """A Qiskit Runtime ``Batch`` on ``backend`` that stays open for ``max_time`` seconds."""
    from qiskit_ibm_runtime import Batch

    return Batch(backend=backend, max_time=max_time)


#: Where Qiskit Runtime's API lives, for the audit record.
IBM_API_DESTINATION = "quantum.cloud.ibm.com:443"

#: Batch statuses in which it still takes new jobs (Qiskit Runtime's wording).
_BATCH_OPEN = ("Pending", "In progress, accepting new jobs")


class IBMBackend(QuantumBackend):
    """A real IBM Quantum device through Qiskit Runtime, behind the task contract.

    The runtime client is not documented as thread-safe, so calls to it are serialised.

    Args:
        name: The name requests use to select this backend, e.g. ``ibm:ibm_torino``.
        backend_name: IBM's device name, e.g. ``ibm_torino``.
        token: IBM Cloud API key.
        instance: The instance's CRN.
        channel: ``ibm_quantum_platform`` (default) or ``ibm_cloud``.
        url: IBM Cloud's URL (``QHYBRID_IBM_URL``), from which the SDK derives its endpoints.
        service_options: More arguments for ``QiskitRuntimeService`` (a test's ``url_resolver``).
        max_execution_time: Upper bound on the QPU seconds one job may use (IBM cancels it
            beyond, which caps its cost); ``None`` leaves IBM's default.
        service: A ready ``QiskitRuntimeService`` or stand-in (tests); built on first use from
            the arguments above otherwise.
        sampler_factory: Builds the sampler from (mode, options); ``SamplerV2`` by default.
        execution_mode: ``job`` (each task its own job, the default) or ``batch``: tasks share a
            Qiskit Runtime ``Batch``, which IBM schedules together (useful when many jobs arrive at
            once); a closed or expired batch is replaced by a new one.
        batch_max_time: Seconds a batch stays open.
        batch_factory: Builds a batch from (backend, max_time); ``Batch`` by default.
        audit: The egress audit log; each submission's program is recorded before the SDK sends.
    """

    def __init__(
        self,
        *,
        name: str,
        backend_name: str,
        token: str | None = None,
        instance: str | None = None,
        channel: str = "ibm_quantum_platform",
        url: str | None = None,
        service_options: Mapping[str, Any] | None = None,
        max_execution_time: int | None = 300,
        service: Any = None,
        sampler_factory: Callable[[Any, dict[str, Any]], Any] = _runtime_sampler,
        execution_mode: str = "job",
        batch_max_time: int = 3600,
        batch_factory: Callable[[Any, int], Any] = _runtime_batch,
        audit: AuditLog | None = None,
    ) -> None:
        if execution_mode not in ("job", "batch"):
            raise ValueError(f"execution_mode must be 'job' or 'batch', got {execution_mode!r}")
        self.name = name
        self._execution_mode = execution_mode
        self._batch_max_time = batch_max_time
        self._batch_factory = batch_factory
        self._batch: Any = None
        self._audit = audit
        self._backend_name = backend_name
        self._token = token
        self._instance = instance
        self._channel = channel
        self._url = url
        self._service_options = dict(service_options or {})
        self._max_execution_time = max_execution_time
        self._service_value = service
        self._sampler_factory = sampler_factory
        self._lock = threading.RLock()
        self._device: Any = None
        self._target: DeviceTarget | None = None
        self._jobs: dict[str, Any] = {}

    def __repr__(self) -> str:
        # Spelled out so that the token never shows up in logs or tracebacks.
        return (
            f"IBMBackend(name={self.name!r}, backend_name={self._backend_name!r}, channel={self._channel!r})"
        )

    # --- plumbing ------------------------------------------------------------------------------

    def _call(self, what: str, function: Callable[[], _T]) -> _T:
        with self._lock:
            try:
                return function()
            except BackendError:
                raise
            except EgressAuditError as exc:
                # Nothing was sent; a full disk can be repaired while the job waits.
                raise TransientBackendError(f"IBM {what}: {exc}") from exc
            except EgressPolicyError as exc:
                # The gateway refused the SDK's request: retrying the same request cannot pass.
                raise PermanentBackendError(f"IBM {what}: {exc}") from exc
            except Exception as exc:
                raise ibm_error(exc, what) from exc

    def _service(self) -> Any:
        with self._lock:
            if self._service_value is None:
                from qiskit_ibm_runtime import QiskitRuntimeService

                self._service_value = self._call(
                    "sign-in",
                    lambda: QiskitRuntimeService(
                        channel=self._channel,
                        token=self._token,
                        instance=self._instance,
                        url=self._url,
                        **self._service_options,
                    ),
                )
            return self._service_value

    def _backend(self) -> Any:
        with self._lock:
            if self._device is None:
                service = self._service()
                self._device = self._call("backend lookup", lambda: service.backend(self._backend_name))
            return self._device

    def _job(self, task_id: str) -> Any:
        """The job object, kept: it caches a final status, which saves calls."""
        if not task_id or not isinstance(task_id, str):
            raise PermanentBackendError(f"{task_id!r} is not an IBM job id")
        with self._lock:
            job = self._jobs.get(task_id)
            if job is None:
                service = self._service()
                job = self._call("job lookup", lambda: service.job(task_id))
                self._remember(task_id, job)
            return job

    def _remember(self, job_id: str, job: Any) -> None:
        """Keep a job object, dropping the oldest beyond :data:`_JOB_CACHE_SIZE` (long-lived workers)."""
        self._jobs[job_id] = job
        while len(self._jobs) > _JOB_CACHE_SIZE:
            self._jobs.pop(next(iter(self._jobs)))

    # --- contract ------------------------------------------------------------------------------

    def target(self) -> DeviceTarget:
        """The device's Target from Qiskit Runtime, fetched once.

        Raises:
            PermanentBackendError: If the device's two-qubit gate is not one of ours (ECR).
        """
        with self._lock:
            if self._target is None:
                self._target = ibm_target(self._backend())
            return self._target

    def _mode(self, backend: Any) -> Any:
        """Where jobs go: the backend itself, or the open batch (a new one when it closed)."""
        if self._execution_mode == "job":
            return backend
        if self._batch is not None:
            try:
                status = self._batch.status()
            except Exception:  # an unreadable batch is treated as closed: open a new one
                status = None
            if status in _BATCH_OPEN:
                return self._batch
        self._batch = self._call("batch creation", lambda: self._batch_factory(backend, self._batch_max_time))
        return self._batch

    def submit(self, program: str, shots: int, client_token: str) -> str:
        """Submit one Sampler job tagged with the client token, unless one already exists.

        Within this process the look-up and the submission hold the client lock, so two threads
        cannot both submit under one token; across processes the worker's job lease does that.
        """
        from qiskit import qasm3

        try:
            # The same bounded grammar as the emulated cloud's submissions, before the SDK converts.
            validate_program(program)
        except PayloadError as exc:
            raise PermanentBackendError(f"the program is refused at the boundary: {exc}") from exc
        try:
            circuit = qasm3.loads(program)
        except Exception as exc:  # the importer raises several unrelated types
            raise PermanentBackendError(f"the program does not parse as OpenQASM 3: {exc}") from exc
        options: dict[str, Any] = {"environment": {"job_tags": [JOB_TAG, token_tag(client_token)]}}
        if self._max_execution_time is not None:
            options["max_execution_time"] = int(self._max_execution_time)
        with self._lock:
            existing = self.find_task(client_token)
            if existing is not None:
                return existing
            self.target()  # refuses devices the program format cannot serve
            backend = self._backend()
            if self._audit is not None:
                # The SDK's request is audited by the gateway's requests guard; this entry ties the
                # job to the program text that was checked before the SDK serialised it.
                try:
                    audit_sdk_submission(
                        self._audit,
                        destination=IBM_API_DESTINATION,
                        payload=program.encode(),
                        job_id=get_current_job(),
                        note="qiskit-ibm-runtime SamplerV2.run",
                    )
                except EgressAuditError as exc:
                    raise TransientBackendError(f"egress audit could not be written: {exc}") from exc

            def run() -> Any:
                sampler = self._sampler_factory(self._mode(backend), options)
                with _quiet_sampler_deprecation():
                    return sampler.run([circuit], shots=shots)

            job = self._call("job submission", run)
            job_id = str(job.job_id())
            self._remember(job_id, job)
            return job_id

    def find_task(self, client_token: str) -> str | None:
        """The job tagged with ``client_token``, or ``None``."""
        service = self._service()
        jobs = self._call("job search", lambda: service.jobs(job_tags=[token_tag(client_token)], limit=1))
        return str(jobs[0].job_id()) if jobs else None

    def status(self, task_id: str) -> TaskStatus:
        """The job's status, normalised; the error message when it failed."""
        job = self._job(task_id)
        raw = self._call("job status", job.status)
        status = normalise_ibm_status(raw)
        if status.state is TaskState.FAILED:
            message = self._call("job error message", job.error_message)
            return normalise_ibm_status(raw, message or "no error message given")
        return status

    def result(self, task_id: str) -> TaskResult:
        """The counts of a DONE job, bit 0 first, with the QPU seconds IBM billed when it says."""
        status = self.status(task_id)
        if status.state is not TaskState.COMPLETED:
            error = f"IBM job {task_id} is {status.provider_state}"
            if status.state in (TaskState.FAILED, TaskState.CANCELLED):
                raise PermanentBackendError(f"{error}: {status.message or 'no result'}")
            raise TransientBackendError(f"{error}; it has no result yet")
        job = self._job(task_id)
        primitive_result = self._call("job result", job.result)
        try:
            counts = _pub_counts(primitive_result)
        except (ValueError, IndexError, AttributeError) as exc:
            raise PermanentBackendError(f"IBM job {task_id} result is unreadable: {exc}") from exc
        metadata: dict[str, object] = {"job_id": task_id, "backend": self._backend_name}
        with contextlib.suppress(BackendError):  # the billed figure is informative only
            metadata["usage_seconds"] = float(self._call("job usage", job.usage))
        return TaskResult(counts=counts, shots=sum(counts.values()), metadata=metadata)

    def cancel(self, task_id: str) -> None:
        """Cancel the job; a job already finished is left as it is."""
        from qiskit_ibm_runtime.exceptions import RuntimeInvalidStateError

        job = self._job(task_id)
        try:
            self._call("job cancellation", job.cancel)
        except PermanentBackendError as exc:
            if isinstance(exc.__cause__, RuntimeInvalidStateError):
                return  # the job is final already
            if self.status(task_id).state in TERMINAL_TASK_STATES:
                return
            raise

    def link(self) -> dict[str, object]:
        """The SDK's own HTTPS: classical TLS through the standard library, said as such."""
        return {
            "transport": "requests (qiskit-ibm-runtime): allow-list, route table and audit by the gateway",
            "tls_version": "TLS (stdlib ssl, OpenSSL 3.0)",
            "tls_group": "classical (no ML-KEM in stdlib ssl)",
            "post_quantum": False,
        }

    def pricing(self) -> Pricing | None:
        """IBM's pay-as-you-go price per QPU second (:data:`IBM_PRICING`)."""
        return IBM_PRICING

    def estimated_seconds(self, shots: int, circuit_seconds: float | None = None) -> float:
        """QPU seconds per :func:`estimate_qpu_seconds`, with the device's repetition delay."""
        rep_delay = getattr(self._device, "default_rep_delay", None) if self._device is not None else None
        return estimate_qpu_seconds(
            shots, circuit_seconds, rep_delay if isinstance(rep_delay, int | float) else None
        )
