"""Amazon Braket: local simulators on this machine, and real devices through the AWS API.

Two classes, one per mode, because they share almost nothing but the program conversion:

* :class:`BraketLocalSimulatorBackend` (backend names ``braket-local`` and ``braket-local:dm``):
  the Braket SDK's ``LocalSimulator`` (``braket_sv``, ``braket_dm``), run in detached processes
  by :class:`~qhybrid.backends.detached.DetachedTaskRunner` so that tasks survive a worker
  restart. Free; no AWS account involved.
* :class:`BraketBackend`: a device by ARN (SV1/DM1/TN1 managed simulators, IonQ, IQM, Rigetti...)
  through ``CreateQuantumTask``/``GetQuantumTask``/``SearchQuantumTasks``/``CancelQuantumTask``
  and the task's ``results.json`` in S3.

Program conversion: our canonical OpenQASM 3 text is parsed with ``qiskit.qasm3.loads`` and
converted gate by gate with qiskit-braket-provider's ``to_braket`` (no re-transpilation: every gate
of :data:`~qhybrid.quantum.qasm.ALLOWED_GATES` has a Braket equivalent, ``sx`` becoming ``v``,
``p`` ``phaseshift`` and so on). Qiskit's own QASM 3 export would not do: Braket has no
``stdgates.inc`` and spells some gates differently. Every classical bit of the program must be
measured exactly once: Braket numbers its result bits in measurement order, not by our classical
bits, so this is what lets classical bit ``i`` be recovered as character ``i`` of each outcome.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)

from qhybrid.backends.base import (
    BackendError,
    PermanentBackendError,
    QuantumBackend,
    TaskResult,
    TaskStatus,
    TransientBackendError,
    parse_retry_after,
)
from qhybrid.backends.detached import BRAKET_EXECUTORS, DetachedBackend, DetachedTaskRunner
from qhybrid.backends.pricing import DEVICE_ARN, SIMULATOR_MINIMUM_SECONDS, braket_pricing
from qhybrid.domain.device import DeviceTarget, Pricing
from qhybrid.domain.states import TERMINAL_TASK_STATES, TaskState
from qhybrid.gateway.audit import AuditLog
from qhybrid.gateway.egress import EgressAuditError, EgressPolicyError
from qhybrid.gateway.payload import PayloadError, validate_program
from qhybrid.gateway.sdk import (
    BRAKET_TOKEN_TAG,
    BotocoreRoutes,
    attach_botocore,
    check_braket_device_arn,
    hooked_aws_session,
)
from qhybrid.quantum.qasm import ALLOWED_GATES, TWO_QUBIT_GATES

_T = TypeVar("_T")

#: Tag that records the client token on every task we create, so a crashed submission is found.
TOKEN_TAG = BRAKET_TOKEN_TAG

#: Every state ``GetQuantumTask`` reports, normalised. CANCELLING is not final (the cancellation
#: is best effort and the task may still complete), so it counts as RUNNING until Braket decides.
BRAKET_STATES: Mapping[str, TaskState] = {
    "CREATED": TaskState.QUEUED,
    "QUEUED": TaskState.QUEUED,
    "RUNNING": TaskState.RUNNING,
    "COMPLETED": TaskState.COMPLETED,
    "FAILED": TaskState.FAILED,
    "CANCELLING": TaskState.RUNNING,
    "CANCELLED": TaskState.CANCELLED,
}

#: Error codes worth retrying: throttling, quotas (concurrent-task limits free up), server faults.
_TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "ServiceQuotaExceededException",
        "InternalServiceException",
        "InternalServerException",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)

_TASK_ARN = re.compile(r"^arn:aws[\w-]*:braket:([a-z0-9-]+):\d{12}:quantum-task/[\w-]+$")
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9._:/=+@-]{1,64}$")
_BIT_DECLARATION = re.compile(r"^\s*bit\[(\d+)\]\s+b\s*;", re.MULTILINE)
_MEASUREMENT = re.compile(r"^\s*b\[(\d+)\]\s*=\s*measure\s+(?:q\[(\d+)\]|\$(\d+))\s*;", re.MULTILINE)

# --------------------------------------------------------------------------- program conversion


def braket_client_token(client_token: str) -> str:
    """The token as Braket accepts it (1-64 characters, also usable as a tag value).

    Our tokens already fit; anything longer or with other characters is replaced by its SHA-256
    digest, which is just as unique and deterministic.
    """
    if _SAFE_TOKEN.match(client_token):
        return client_token
    return hashlib.sha256(client_token.encode("utf-8")).hexdigest()


def program_to_braket_circuit(program: str, *, qubit_labels: Sequence[int] | None = None) -> Any:
    """Our OpenQASM 3 program as a Braket ``Circuit``.

    Args:
        program: Canonical OpenQASM 3 text (see :mod:`qhybrid.quantum.qasm`).
        qubit_labels: Device qubit label of each program qubit (program qubit ``i`` becomes
            ``qubit_labels[i]``), for devices whose qubits are not numbered 0..n-1. ``None`` keeps
            the program's numbering.

    Returns:
        A ``braket.circuits.Circuit`` measuring classical bit ``i`` as its ``i``-th measurement.

    Raises:
        ValueError: If the program does not parse, does not measure every classical bit exactly
            once, uses a gate Braket cannot express, or a qubit beyond ``qubit_labels``.
    """
    from qiskit import qasm3
    from qiskit_braket_provider import to_braket

    try:
        circuit = qasm3.loads(program)
    except Exception as exc:  # the importer raises several unrelated types
        raise ValueError(f"the program does not parse as OpenQASM 3: {exc}") from exc
    measured: dict[int, int] = {}
    for instruction in circuit.data:
        if instruction.operation.name == "measure":
            clbit = circuit.find_bit(instruction.clbits[0]).index
            if clbit in measured:
                raise ValueError(f"classical bit {clbit} is measured twice")
            measured[clbit] = circuit.find_bit(instruction.qubits[0]).index
    if sorted(measured) != list(range(circuit.num_clbits)):
        missing = sorted(set(range(circuit.num_clbits)) - set(measured))
        raise ValueError(f"every classical bit must be measured exactly once; not measured: {missing}")
    if qubit_labels is not None:
        used = {circuit.find_bit(qubit).index for instruction in circuit.data for qubit in instruction.qubits}
        if used and max(used) >= len(qubit_labels):
            raise ValueError(f"the program uses qubit {max(used)} but the device has {len(qubit_labels)}")
        qubit_labels = list(qubit_labels)[: circuit.num_qubits]
    # basis_gates = our own gate set: the circuit is already made of it, so to_braket translates
    # gate by gate without transpiling (no layout change, no extra gates, no verbatim box).
    return to_braket(circuit, basis_gates=sorted(ALLOWED_GATES), qubit_labels=qubit_labels)


def braket_counts(
    source: str, measured_qubits: Sequence[int], measurement_counts: Mapping[str, int]
) -> dict[str, int]:
    """Outcome counts with character ``i`` = classical bit ``i``, from a Braket gate-model result.

    Braket keys its counts by ``measured_qubits`` order; the program (as Braket ran it, from the
    result's ``additionalMetadata.action.source``) says which qubit each result bit ``b[i]``
    measured. Programs built by :func:`program_to_braket_circuit` measure classical bit ``i``
    into ``b[i]``.

    Raises:
        ValueError: If the program's measurements and the result's qubits do not match.
    """
    declared = _BIT_DECLARATION.search(source)
    num_bits = int(declared.group(1)) if declared else 0
    qubit_of_bit: dict[int, int] = {}
    for match in _MEASUREMENT.finditer(source):
        qubit_of_bit[int(match.group(1))] = int(match.group(2) or match.group(3))
    if sorted(qubit_of_bit) != list(range(num_bits)) or num_bits == 0:
        raise ValueError(f"the program does not measure each of its {num_bits} result bits once")
    column = {int(qubit): position for position, qubit in enumerate(measured_qubits)}
    try:
        positions = [column[qubit_of_bit[bit]] for bit in range(num_bits)]
    except KeyError as exc:
        raise ValueError(f"qubit {exc.args[0]} is measured by the program but not in the result") from exc
    counts: dict[str, int] = {}
    for outcome, count in measurement_counts.items():
        key = "".join(outcome[position] for position in positions)
        counts[key] = counts.get(key, 0) + int(count)
    return counts


def _result_counts(result: Any) -> dict[str, int]:
    """Counts of a ``GateModelQuantumTaskResult``, bit 0 first."""
    action = getattr(result.additional_metadata, "action", None)
    source = getattr(action, "source", None)
    if not isinstance(source, str):
        raise ValueError("the result does not carry the OpenQASM program it ran")
    return braket_counts(source, list(result.measured_qubits), dict(result.measurement_counts))


def run_local_simulation(
    simulator: str, program: str, shots: int
) -> tuple[dict[str, int], dict[str, object]]:
    """Run a program on a Braket SDK local simulator (the local runner's ``braket_*`` executors).

    Args:
        simulator: ``braket_sv`` or ``braket_dm``.
        program: Canonical OpenQASM 3 text.
        shots: Number of shots.

    Returns:
        Counts (bit 0 first) and metadata.
    """
    import warnings

    from braket.devices import LocalSimulator

    if simulator not in BRAKET_EXECUTORS:
        raise ValueError(f"unknown Braket local simulator {simulator!r}")
    circuit = program_to_braket_circuit(program)
    with warnings.catch_warnings():
        # braket_dm warns that a noise-free circuit would run faster on braket_sv: we know.
        warnings.filterwarnings("ignore", message=".*noise-free circuit.*", category=UserWarning)
        # LocalSimulator.run is synchronous for local devices: the task is done when it returns.
        result = LocalSimulator(simulator).run(circuit, shots=shots).result()
    return _result_counts(result), {
        "simulator": simulator,
        "measured_qubits": [int(qubit) for qubit in result.measured_qubits],
    }


# --------------------------------------------------------------------------- shared helpers


def _braket_target(qiskit_target: Any, name: str, basis: set[str], fully_connected: bool) -> DeviceTarget:
    """A :class:`DeviceTarget` restricted to the gates our program format carries."""
    basis_gates = tuple(sorted(basis & ALLOWED_GATES))
    if not TWO_QUBIT_GATES & set(basis_gates):
        raise PermanentBackendError(
            f"Braket device {name!r} accepts none of the two-qubit gates our programs use "
            f"({', '.join(sorted(TWO_QUBIT_GATES))}); its gates: {sorted(basis)}"
        )
    return DeviceTarget.from_qiskit(
        qiskit_target, name=name, basis_gates=basis_gates, provider="braket", all_to_all=fully_connected
    )


def braket_error(exc: Exception, what: str) -> BackendError:
    """Sort an AWS SDK failure into transient (retry later) and permanent ones.

    Throttling, quota, 5xx and connection failures are transient; validation, access denied,
    resource not found, offline or retired devices, conflicts and missing credentials are
    permanent.
    """
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or str(exc)
        metadata = exc.response.get("ResponseMetadata", {})
        status = metadata.get("HTTPStatusCode")
        headers = metadata.get("HTTPHeaders", {})
        text = f"Braket {what} failed: {code or status}: {message}"
        if code in _TRANSIENT_CODES or status == 429 or (isinstance(status, int) and status >= 500):
            return TransientBackendError(text, retry_after=parse_retry_after(headers.get("retry-after")))
        return PermanentBackendError(text)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | NoRegionError | ParamValidationError):
        return PermanentBackendError(f"Braket {what}: {exc}")
    if isinstance(exc, BotoCoreError):
        # Connection, timeout and response-reading failures: the request may not have arrived.
        return TransientBackendError(f"Braket {what} failed: {exc!r}")
    if isinstance(exc, ValueError | TypeError):
        return PermanentBackendError(f"Braket {what}: {exc}")
    return TransientBackendError(f"Braket {what} failed: {exc!r}")


def map_braket_status(metadata: Mapping[str, Any]) -> TaskStatus:
    """A ``GetQuantumTask`` answer as a :class:`TaskStatus`.

    Raises:
        PermanentBackendError: On a state this adapter does not know.
    """
    provider_state = str(metadata.get("status"))
    state = BRAKET_STATES.get(provider_state)
    if state is None:
        raise PermanentBackendError(f"Braket reported unknown task state {provider_state!r}")
    position: int | None = None
    message: str | None = None
    queue = metadata.get("queueInfo")
    if isinstance(queue, Mapping) and state is TaskState.QUEUED:
        raw = str(queue.get("position", ""))
        if raw.isdigit():
            position = int(raw)
        elif raw.startswith(">") and raw[1:].isdigit():
            position = int(raw[1:])  # ">2000": at least that many ahead
        if isinstance(queue.get("message"), str):
            message = queue["message"]
    if state is TaskState.FAILED:
        message = str(metadata.get("failureReason") or "no failure reason given")
    return TaskStatus(state=state, provider_state=provider_state, queue_position=position, message=message)


# --------------------------------------------------------------------------- local mode


class BraketLocalSimulatorBackend(DetachedBackend):
    """The Braket SDK's local simulator behind the task contract (``braket-local``).

    Args:
        name: The name requests use (``braket-local``, ``braket-local:dm``).
        runner: Runs the tasks in detached processes.
        simulator: ``braket_sv`` (state vector) or ``braket_dm`` (density matrix).
    """

    def __init__(self, *, name: str, runner: DetachedTaskRunner, simulator: str = "braket_sv") -> None:
        if simulator not in BRAKET_EXECUTORS:
            raise PermanentBackendError(
                f"unknown Braket local simulator {simulator!r}; expected one of {sorted(BRAKET_EXECUTORS)}"
            )
        super().__init__(name=name, runner=runner, executor=simulator)
        self._simulator = simulator
        self._target: DeviceTarget | None = None
        self._target_lock = threading.Lock()

    def target(self) -> DeviceTarget:
        """The simulator as qiskit-braket-provider describes it; all-to-all, built once."""
        with self._target_lock:
            if self._target is None:
                from qiskit_braket_provider import BraketLocalBackend

                qiskit_target = BraketLocalBackend(self._simulator).target
                self._target = _braket_target(
                    qiskit_target, self._simulator, set(qiskit_target.operation_names), fully_connected=True
                )
            return self._target


# --------------------------------------------------------------------------- AWS mode


class _ClientTokenSession:
    """An ``AwsSession`` stand-in that adds our idempotency token to ``CreateQuantumTask``.

    The SDK's ``AwsQuantumTask.create`` builds the request (program serialisation, device
    parameters per device family) but has no client-token argument, and without one boto3 makes
    up a random token, so a retried submission would create a second task.
    """

    def __init__(self, session: Any, client_token: str) -> None:
        self._session = session
        self._client_token = client_token

    def create_quantum_task(self, **kwargs: Any) -> str:
        arn: str = self._session.create_quantum_task(clientToken=self._client_token, **kwargs)
        return arn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class BraketBackend(QuantumBackend):
    """A Braket device (managed simulator or QPU) behind the task contract.

    * Idempotency: every task is created with our client token as Braket's ``clientToken`` (the
      service returns the existing task for a repeated token) and as the tag
      :data:`TOKEN_TAG`, which :meth:`find_task` looks for.
    * Task ids are task ARNs.
    * Device status is checked before submission: ``RETIRED`` and ``OFFLINE`` devices are refused
      (permanent), a ``PAUSED`` one is retried later (transient). A device outside its
      availability window is not an error: Braket queues the task until the window opens.
    * QPUs with a restricted connectivity get the program on physical qubits (``$n``) with qubit
      rewiring disabled, so the layout our transpiler chose from the device's error rates stands;
      program qubit ``i`` is device qubit ``qubit_labels[i]`` (labels sorted, as
      qiskit-braket-provider numbers its Target). Braket still compiles the gates to native ones.

    Args:
        name: The name requests use to select this backend.
        device_arn: The device, e.g. ``arn:aws:braket:::device/quantum-simulator/amazon/sv1``; a
            QPU's ARN must name ``region``.
        s3_bucket: Bucket for the task results (Braket requires one; name starting ``amazon-braket-``).
        s3_prefix: Key prefix for the task results.
        region: The operator's AWS region (``QHYBRID_AWS_REGION``); every destination is derived
            from it, never from the request. The session's region if ``None`` (tests).
        aws_session: A ready ``braket.aws.AwsSession`` (tests, custom credentials); otherwise a
            :func:`~qhybrid.gateway.sdk.hooked_aws_session` from the default credential chain,
            without the instance metadata service unless ``instance_metadata``.
        audit: The egress audit log; with it every request the SDK sends is policy-checked and
            audited (the registry always gives one).
        routes: The gateway's route table for Braket and S3 (:func:`~qhybrid.gateway.sdk.braket_routes`).
        extra_allowed: More ``host:port`` the SDK may reach (``QHYBRID_EGRESS_ALLOW``).
        instance_metadata: Let botocore ask the EC2 metadata service for credentials.
        search_hours: How far back :meth:`find_task` looks for a task with our token.
        max_search_pages: At most this many pages of 100 tasks are searched.
    """

    def __init__(
        self,
        *,
        name: str,
        device_arn: str,
        s3_bucket: str,
        s3_prefix: str = "qhybrid",
        region: str | None = None,
        aws_session: Any = None,
        audit: AuditLog | None = None,
        routes: BotocoreRoutes | None = None,
        extra_allowed: Sequence[str] = (),
        instance_metadata: bool = False,
        search_hours: float = 72.0,
        max_search_pages: int = 20,
    ) -> None:
        match = DEVICE_ARN.match(device_arn)
        if match is None:
            raise PermanentBackendError(f"{device_arn!r} is not a Braket device ARN")
        if not s3_bucket:
            raise PermanentBackendError("Braket needs an S3 bucket for task results")
        region = region or (aws_session.boto_session.region_name if aws_session is not None else None)
        if not region:
            raise PermanentBackendError("Braket needs QHYBRID_AWS_REGION: destinations come from it")
        try:
            check_braket_device_arn(device_arn, region)
        except ValueError as exc:
            raise PermanentBackendError(str(exc)) from exc
        self.name = name
        self._arn = device_arn
        self._is_qpu = match.group(2) == "qpu"
        self._region = region
        self._routes = routes
        self._extra_allowed = tuple(extra_allowed)
        self._instance_metadata = instance_metadata
        self._bucket = s3_bucket
        self._prefix = s3_prefix.strip("/") or "qhybrid"
        self._session_value = aws_session
        self._audit = audit
        self._hooked = False
        self._search_hours = search_hours
        self._max_search_pages = max_search_pages
        self._lock = threading.Lock()
        self._device: Any = None
        self._qubit_labels: tuple[int, ...] | None = None
        self._target: DeviceTarget | None = None
        self._s3: Any = None

    def __repr__(self) -> str:
        return f"BraketBackend(name={self.name!r}, device_arn={self._arn!r}, s3_bucket={self._bucket!r})"

    # --- plumbing ------------------------------------------------------------------------------

    def _allowed(self) -> list[str]:
        """Where the SDK may go: Braket and S3 in the operator's region, and the configured extras."""
        region, bucket = self._region, self._bucket
        return [
            f"braket.{region}.amazonaws.com:443",
            f"{bucket}.s3.{region}.amazonaws.com:443",
            f"s3.{region}.amazonaws.com:443",
            f"{bucket}.s3.amazonaws.com:443",
            *self._extra_allowed,
        ]

    def _hook(self, session: Any) -> None:
        """Attach the gateway's policy to a session.

        Every request the SDK sends (Braket API and S3) passes the gateway's allow-list and route
        table and is audited byte for byte before it leaves; the TLS is botocore's.
        """
        assert self._audit is not None
        attach_botocore(session, allowed=self._allowed(), audit=self._audit, routes=self._routes)

    def _session(self) -> Any:
        with self._lock:
            if self._session_value is None:
                try:
                    if self._audit is None:
                        raise PermanentBackendError("a Braket session needs the egress audit log")
                    self._session_value = hooked_aws_session(
                        region=self._region, hook=self._hook, instance_metadata=self._instance_metadata
                    )
                    self._hooked = True
                except BackendError:
                    raise
                except Exception as exc:
                    raise braket_error(exc, "session setup") from exc
            if self._audit is not None and not self._hooked:
                self._hook(self._session_value)  # a session given by the caller (tests)
                self._hooked = True
            return self._session_value

    def _client(self) -> Any:
        return self._session().braket_client

    def _s3_client(self) -> Any:
        session = self._session()
        with self._lock:
            if self._s3 is None:
                self._s3 = session.s3_client
            return self._s3

    @staticmethod
    def _call(what: str, function: Callable[[], _T]) -> _T:
        try:
            return function()
        except BackendError:
            raise
        except EgressAuditError as exc:
            raise TransientBackendError(f"Braket {what}: {exc}") from exc  # nothing sent; may heal
        except EgressPolicyError as exc:
            raise PermanentBackendError(f"Braket {what}: {exc}") from exc  # the same request never passes
        except Exception as exc:
            raise braket_error(exc, what) from exc

    def _aws_device(self) -> tuple[Any, DeviceTarget, tuple[int, ...] | None]:
        """The ``AwsDevice``, our target and the device's qubit labels, fetched once."""
        session = self._session()
        with self._lock:
            if self._target is None:
                from braket.aws import AwsDevice
                from braket.device_schema import DeviceActionType
                from qiskit_braket_provider.providers.target import (
                    aws_device_to_target,
                    gateset_from_properties,
                )

                # The Target is what BraketAwsBackend(device=...).target builds; built directly
                # because BraketAwsBackend replaces the session's Braket client (to add its user
                # agent), which would drop the configuration and event hooks of ours.
                device = self._call("GetDevice", lambda: AwsDevice(self._arn, aws_session=session))
                qiskit_target = self._call("GetDevice", lambda: aws_device_to_target(device))
                if self._is_qpu:
                    # A QPU's Target lists its native gates only (IQM: prx, cz; Rigetti: rx, rz,
                    # iswap; IonQ: gpi, gpi2, ms), mostly outside our program format. Braket
                    # compiles the gates it supports to native ones, so those are our basis.
                    action = device.properties.action[DeviceActionType.OPENQASM]
                    basis = set(gateset_from_properties(action))
                    fully_connected = bool(device.properties.paradigm.connectivity.fullyConnected)
                else:
                    basis = set(qiskit_target.operation_names)
                    fully_connected = True
                self._device = device
                # Target qubit i is the i-th smallest device label (as qiskit-braket-provider numbers).
                self._qubit_labels = None if fully_connected else tuple(sorted(device.topology_graph.nodes))
                self._target = _braket_target(qiskit_target, device.name, basis, fully_connected)
            return self._device, self._target, self._qubit_labels

    @staticmethod
    def _check_task_id(task_id: str) -> None:
        if not _TASK_ARN.match(task_id):
            raise PermanentBackendError(f"{task_id!r} is not a Braket quantum task ARN")

    # --- contract ------------------------------------------------------------------------------

    def target(self) -> DeviceTarget:
        """The device from ``GetDevice``, through qiskit-braket-provider's Target; fetched once."""
        return self._aws_device()[1]

    def submit(self, program: str, shots: int, client_token: str) -> str:
        """Create the task under our client token; a repeated token returns the same task ARN."""
        from braket.aws import AwsQuantumTask

        token = braket_client_token(client_token)
        try:
            # The same bounded grammar as the emulated cloud's submissions, before conversion.
            validate_program(program)
        except PayloadError as exc:
            raise PermanentBackendError(f"the program is refused at the boundary: {exc}") from exc
        device_status = self._call("GetDevice", lambda: self._client().get_device(deviceArn=self._arn))
        status = str(device_status.get("deviceStatus"))
        if status in ("RETIRED", "OFFLINE"):
            raise PermanentBackendError(f"Braket device {self._arn} is {status}")
        if status == "PAUSED":
            raise TransientBackendError(f"Braket device {self._arn} is PAUSED")
        labels = self._aws_device()[2] if self._is_qpu else None
        try:
            circuit = program_to_braket_circuit(program, qubit_labels=labels)
        except ValueError as exc:
            raise PermanentBackendError(f"the program cannot run on Braket: {exc}") from exc
        session = _ClientTokenSession(self._session(), token)
        task = self._call(
            "CreateQuantumTask",
            lambda: AwsQuantumTask.create(
                session,
                self._arn,
                circuit,
                (self._bucket, self._prefix),
                shots,
                tags={TOKEN_TAG: token},
                disable_qubit_rewiring=labels is not None,
                quiet=True,
            ),
        )
        return str(task.id)

    def find_task(self, client_token: str) -> str | None:
        """The task tagged with ``client_token`` on this device, searched newest first.

        ``SearchQuantumTasks`` cannot filter on tags, so this pages through the device's tasks
        (filtered on the device ARN) and stops at the first page older than ``search_hours``.
        """
        token = braket_client_token(client_token)
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=self._search_hours)
        client = self._client()
        next_token: str | None = None
        for _ in range(self._max_search_pages):
            request: dict[str, Any] = {
                "filters": [{"name": "deviceArn", "operator": "EQUAL", "values": [self._arn]}],
                "maxResults": 100,
            }
            if next_token:
                request["nextToken"] = next_token
            page: dict[str, Any] = self._call(
                "SearchQuantumTasks", partial(client.search_quantum_tasks, **request)
            )
            tasks = page.get("quantumTasks", [])
            for summary in tasks:
                if summary.get("tags", {}).get(TOKEN_TAG) == token:
                    return str(summary["quantumTaskArn"])
            next_token = page.get("nextToken")
            created = [summary.get("createdAt") for summary in tasks]
            if not next_token or (
                created and all(isinstance(when, dt.datetime) and when < cutoff for when in created)
            ):
                return None
        return None

    def status(self, task_id: str) -> TaskStatus:
        """The task's state; queue position while it waits."""
        self._check_task_id(task_id)
        metadata = self._call(
            "GetQuantumTask",
            lambda: self._client().get_quantum_task(
                quantumTaskArn=task_id, additionalAttributeNames=["QueueInfo"]
            ),
        )
        return map_braket_status(metadata)

    def result(self, task_id: str) -> TaskResult:
        """The counts of a COMPLETED task, from its ``results.json`` in S3, bit 0 first."""
        self._check_task_id(task_id)
        metadata = self._call(
            "GetQuantumTask", lambda: self._client().get_quantum_task(quantumTaskArn=task_id)
        )
        status = map_braket_status(metadata)
        if status.state is not TaskState.COMPLETED:
            error = f"Braket task {task_id} is {status.provider_state}"
            if status.state in (TaskState.FAILED, TaskState.CANCELLED):
                raise PermanentBackendError(f"{error}: {status.message or 'no result'}")
            raise TransientBackendError(f"{error}; it has no result yet")
        bucket = str(metadata["outputS3Bucket"])
        key = f"{str(metadata['outputS3Directory']).rstrip('/')}/results.json"
        body = self._call(
            "S3 GetObject", lambda: self._s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        )
        from braket.tasks import GateModelQuantumTaskResult

        try:
            result = GateModelQuantumTaskResult.from_string(body.decode("utf-8"))
            counts = _result_counts(result)
        except (ValueError, TypeError, KeyError) as exc:
            raise PermanentBackendError(f"Braket result of {task_id} is unreadable: {exc}") from exc
        return TaskResult(
            counts=counts,
            shots=sum(counts.values()),
            metadata={
                "task_arn": task_id,
                "device_arn": str(metadata.get("deviceArn", self._arn)),
                "measured_qubits": [int(qubit) for qubit in result.measured_qubits],
                "results_s3_uri": f"s3://{bucket}/{key}",
            },
        )

    def cancel(self, task_id: str) -> None:
        """Ask Braket to cancel; a task already finished is left as it is."""
        self._check_task_id(task_id)
        try:
            self._call(
                "CancelQuantumTask", lambda: self._client().cancel_quantum_task(quantumTaskArn=task_id)
            )
        except PermanentBackendError:
            # Braket refuses to cancel a finished task: that is success for us.
            if self.status(task_id).state in TERMINAL_TASK_STATES:
                return
            raise

    def link(self) -> dict[str, object]:
        """The SDK's own HTTPS: classical TLS through the standard library, said as such."""
        return {
            "transport": "botocore, policy-checked and audited by the gateway",
            "tls_version": "TLS (stdlib ssl, OpenSSL 3.0)",
            "tls_group": "classical (no ML-KEM in stdlib ssl)",
            "post_quantum": False,
        }

    def pricing(self) -> Pricing | None:
        """Braket's published price for this device (see :data:`BRAKET_PRICES`).

        A device missing from the table is priced from the ``deviceCost`` its ``GetDevice``
        answer carries, when it has one.

        Raises:
            PermanentBackendError: If no price is known: a paid device must not look free.
        """
        pricing = braket_pricing(self._arn)
        if pricing is not None:
            return pricing
        device = self._aws_device()[0]
        cost = getattr(getattr(device.properties, "service", None), "deviceCost", None)
        if cost is not None:
            unit = str(cost.unit).lower()
            source = f"deviceCost of GetDevice for {self._arn}: {cost.price} USD per {unit}"
            if unit == "shot":
                return Pricing(per_task=0.30, per_shot=float(cost.price), source=source)
            if unit == "minute":
                return Pricing(per_second=float(cost.price) / 60, source=source)
        raise PermanentBackendError(f"no published price is known for Braket device {self._arn}")

    def estimated_seconds(self, shots: int, circuit_seconds: float | None = None) -> float:
        """Billed seconds: the 3-second minimum for managed simulators (a lower bound), 0 for QPUs."""
        return 0.0 if self._is_qpu else SIMULATOR_MINIMUM_SECONDS
