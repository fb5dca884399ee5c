"""Braket adapters: the local simulators end to end, the AWS adapter against stubbed AWS clients.

Tests named ``test_stubbed_*`` drive :class:`BraketBackend` through a real ``boto3`` client and a
real ``braket.aws.AwsSession`` whose answers come from botocore's own ``Stubber`` (which also
checks every request against the Braket API model). Result files are built with the Braket SDK's
own result schema, in the shape Braket writes to S3. Nothing here reaches AWS.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError, NoCredentialsError, ReadTimeoutError
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from braket.aws import AwsSession
from braket.circuits.serialization import IRType, OpenQASMSerializationProperties, QubitReferenceType

from qhybrid.backends.base import PermanentBackendError, TransientBackendError
from qhybrid.backends.braket import (
    BRAKET_STATES,
    TOKEN_TAG,
    BraketBackend,
    BraketLocalSimulatorBackend,
    braket_client_token,
    braket_counts,
    braket_error,
    program_to_braket_circuit,
)
from qhybrid.backends.detached import DetachedTaskRunner
from qhybrid.backends.pricing import braket_pricing
from qhybrid.domain.states import TERMINAL_TASK_STATES, TaskState
from qhybrid.quantum.qasm import ALLOWED_GATES

# c[0] reads the flipped q[2], c[1] reads q[0], c[2] and c[3] read a Bell pair on q[1], q[3]:
# bit 0 first, the outcomes are "1000" and "1011".
PROGRAM = """OPENQASM 3.0;
include "stdgates.inc";
qubit[4] q;
bit[4] c;
x q[2];
h q[1];
cx q[1], q[3];
sx q[0];
sx q[0];
sx q[0];
sx q[0];
c[0] = measure q[2];
c[1] = measure q[0];
c[2] = measure q[1];
c[3] = measure q[3];
"""
#: The same measurements out of bit order: the gateway's grammar refuses it (the emitter never
#: writes it), the conversion alone still orders Braket's result bits by classical bit.
UNORDERED = PROGRAM.replace(
    "c[0] = measure q[2];\nc[1] = measure q[0];\nc[2] = measure q[1];\nc[3] = measure q[3];\n",
    "c[1] = measure q[0];\nc[0] = measure q[2];\nc[3] = measure q[3];\nc[2] = measure q[1];\n",
)

SV1 = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"
TASK_ARN = "arn:aws:braket:us-east-1:123456789012:quantum-task/5766fd9f-8bd6-4bfd-8a2b-ef2d1c6c3a85"
BUCKET = "amazon-braket-qhybrid-test"


# ----------------------------------------------------------------------------- local simulators


@pytest.fixture(scope="module")
def local_backends(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BraketLocalSimulatorBackend]:
    runner = DetachedTaskRunner(tmp_path_factory.mktemp("braket") / "local-tasks")
    return {
        "braket-local": BraketLocalSimulatorBackend(name="braket-local", runner=runner),
        "braket-local:dm": BraketLocalSimulatorBackend(
            name="braket-local:dm", runner=runner, simulator="braket_dm"
        ),
    }


def test_local_targets_carry_our_gates_and_the_provider_target(
    local_backends: dict[str, BraketLocalSimulatorBackend],
) -> None:
    for name, simulator, qubits in (("braket-local", "braket_sv", 26), ("braket-local:dm", "braket_dm", 13)):
        target = local_backends[name].target()
        assert target.name == simulator
        assert target.provider == "braket"
        assert target.num_qubits == qubits
        assert set(target.basis_gates) == ALLOWED_GATES
        assert target.coupling_map is None
        assert "measure" in target.qiskit_target.operation_names


@pytest.mark.integration
def test_local_simulators_end_to_end_bit_zero_first(
    local_backends: dict[str, BraketLocalSimulatorBackend],
) -> None:
    ids = {name: backend.submit(PROGRAM, 400, f"e2e-{name}") for name, backend in local_backends.items()}
    for name, backend in local_backends.items():
        assert backend.submit(PROGRAM, 400, f"e2e-{name}") == ids[name]
        assert backend.find_task(f"e2e-{name}") == ids[name]
    for name, backend in local_backends.items():
        deadline = time.monotonic() + 90
        while (status := backend.status(ids[name])).state not in TERMINAL_TASK_STATES:
            assert time.monotonic() < deadline, f"{name} did not finish"
            time.sleep(0.1)
        assert status.state is TaskState.COMPLETED, status.message
        result = backend.result(ids[name])
        assert set(result.counts) == {"1000", "1011"}, result.counts
        assert sum(result.counts.values()) == result.shots == 400
        assert 100 < result.counts["1011"] < 300
    assert local_backends["braket-local"].pricing() is None
    assert local_backends["braket-local"].estimated_seconds(1000) == 0.0


def test_unknown_local_simulator_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PermanentBackendError, match="unknown Braket local simulator"):
        BraketLocalSimulatorBackend(name="x", runner=DetachedTaskRunner(tmp_path), simulator="tn1")


# ----------------------------------------------------------------------------- conversion


def test_program_conversion_keeps_qubits_and_orders_measurements_by_classical_bit() -> None:
    assert UNORDERED != PROGRAM
    source = program_to_braket_circuit(UNORDERED).to_ir(IRType.OPENQASM).source
    assert "stdgates" not in source
    assert "cnot q[1], q[3];" in source
    assert "v q[0];" in source  # sx is Braket's v
    measurements = [line for line in source.splitlines() if "measure" in line]
    assert measurements == [
        "b[0] = measure q[2];",
        "b[1] = measure q[0];",
        "b[2] = measure q[1];",
        "b[3] = measure q[3];",
    ]


def test_program_conversion_onto_device_qubit_labels() -> None:
    # A QPU whose qubits are labelled 1, 2, 4, 5, 7: program qubit i is device qubit labels[i].
    circuit = program_to_braket_circuit(PROGRAM, qubit_labels=[1, 2, 4, 5, 7])
    physical = OpenQASMSerializationProperties(qubit_reference_type=QubitReferenceType.PHYSICAL)
    source = circuit.to_ir(IRType.OPENQASM, serialization_properties=physical).source
    assert "cnot $2, $5;" in source
    assert "b[0] = measure $4;" in source
    with pytest.raises(ValueError, match="device has 2"):
        program_to_braket_circuit(PROGRAM, qubit_labels=[0, 1])


def test_program_conversion_refuses_unmeasured_or_twice_measured_bits() -> None:
    with pytest.raises(ValueError, match="not measured: \\[2\\]"):
        program_to_braket_circuit(PROGRAM.replace("c[2] = measure q[1];\n", ""))
    with pytest.raises(ValueError, match="measured twice"):
        program_to_braket_circuit(PROGRAM.replace("c[2] = measure q[1];", "c[0] = measure q[1];"))
    with pytest.raises(ValueError, match="does not parse"):
        program_to_braket_circuit("OPENQASM 3.0;\nqubit[1] q;\nfoo q[0];\n")


def test_counts_follow_the_program_not_the_result_column_order() -> None:
    source = "OPENQASM 3.0;\nbit[3] b;\nb[0] = measure $7;\nb[1] = measure $3;\nb[2] = measure $5;\n"
    # Braket reports the columns in another order (here sorted by qubit).
    counts = braket_counts(source, [3, 5, 7], {"001": 5, "110": 2})
    assert counts == {"100": 5, "011": 2}
    with pytest.raises(ValueError, match="not in the result"):
        braket_counts(source, [3, 5], {"00": 1})


def test_client_token_fits_braket() -> None:
    assert braket_client_token("0123abcd") == "0123abcd"
    long_token = "x" * 100
    assert len(braket_client_token(long_token)) == 64
    assert braket_client_token(long_token) == braket_client_token(long_token)
    assert braket_client_token("with space") != "with space"


def test_pricing_table() -> None:
    sv1 = braket_pricing(SV1)
    assert sv1 is not None and sv1.per_second == pytest.approx(0.075 / 60) and sv1.per_task == 0
    forte = braket_pricing("arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1")
    assert forte is not None and forte.estimate(1000) == pytest.approx(0.30 + 80.0)
    garnet = braket_pricing("arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet")
    assert garnet is not None and garnet.per_shot == pytest.approx(0.00145)
    assert "aws.amazon.com/braket/pricing" in garnet.source
    assert braket_pricing("arn:aws:braket:us-east-1::device/qpu/newco/Prototype") is None


# ----------------------------------------------------------------------------- stubbed AWS


@functools.cache
def _stubbed_boto_session() -> boto3.Session:
    """One boto3 session (fixed region and fake keys) for every stubbed test of this module.

    Each test still gets fresh clients, with their own Stubbers and event handlers (a client's
    events are its own); only the session's parsed service models are shared. A fresh session
    per test re-read botocore's endpoint and service JSON: 0.15-1.6 s per test on this machine,
    against 0.02-0.06 s for new clients on a kept session.
    """
    return boto3.Session(
        region_name="us-east-1", aws_access_key_id="AKIDSTUBBED", aws_secret_access_key="stubbed"
    )


class StubbedAws:
    """A real AwsSession over real boto3 clients whose answers come from botocore Stubbers."""

    def __init__(self) -> None:
        boto_session = _stubbed_boto_session()
        self.session = AwsSession(boto_session=boto_session, braket_client=boto_session.client("braket"))
        self.braket = Stubber(self.session.braket_client)
        self.s3 = Stubber(self.session.s3_client)
        self.sent: list[dict[str, Any]] = []
        self.session.braket_client.meta.events.register(
            "provide-client-params.braket.CreateQuantumTask", self._record
        )

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.sent.append(dict(params))

    def backend(self, device_arn: str = SV1, **kwargs: Any) -> BraketBackend:
        return BraketBackend(
            name="braket-sv1",
            device_arn=device_arn,
            s3_bucket=BUCKET,
            s3_prefix="tasks",
            aws_session=self.session,
            **kwargs,
        )

    def device(self, status: str = "ONLINE") -> None:
        self.braket.add_response(
            "get_device",
            {
                "deviceArn": SV1,
                "deviceName": "SV1",
                "providerName": "Amazon Braket",
                "deviceType": "SIMULATOR",
                "deviceStatus": status,
                "deviceCapabilities": "{}",
            },
            {"deviceArn": SV1},
        )

    def task(self, status: str, *, queue_info: bool = True, **extra: Any) -> None:
        """Answer one GetQuantumTask; status() asks for the queue info, result() does not."""
        response = {
            "quantumTaskArn": TASK_ARN,
            "status": status,
            "deviceArn": SV1,
            "deviceParameters": "{}",
            "shots": 100,
            "outputS3Bucket": BUCKET,
            "outputS3Directory": "tasks/5766fd9f",
            "createdAt": dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
            **extra,
        }
        expected: dict[str, Any] = {"quantumTaskArn": TASK_ARN}
        if queue_info:
            expected["additionalAttributeNames"] = ["QueueInfo"]
        self.braket.add_response("get_quantum_task", response, expected)


@pytest.fixture
def aws() -> Iterator[StubbedAws]:
    stubbed = StubbedAws()
    with stubbed.braket, stubbed.s3:
        yield stubbed
    stubbed.braket.assert_no_pending_responses()
    stubbed.s3.assert_no_pending_responses()


def test_stubbed_submit_sends_the_client_token_as_idempotency_token_and_tag(aws: StubbedAws) -> None:
    backend = aws.backend()
    aws.device()
    expected = {
        "clientToken": "token-123",
        "deviceArn": SV1,
        "outputS3Bucket": BUCKET,
        "outputS3KeyPrefix": "tasks",
        "shots": 100,
        "tags": {TOKEN_TAG: "token-123"},
        "action": ANY,
        "deviceParameters": ANY,
    }
    aws.braket.add_response("create_quantum_task", {"quantumTaskArn": TASK_ARN}, expected)
    assert backend.submit(PROGRAM, 100, "token-123") == TASK_ARN
    action = json.loads(aws.sent[0]["action"])
    assert "b[0] = measure q[2];" in action["source"]
    assert "stdgates" not in action["source"]
    parameters = json.loads(aws.sent[0]["deviceParameters"])
    assert parameters["paradigmParameters"]["disableQubitRewiring"] is False


ANKAA = "arn:aws:braket:us-west-1::device/qpu/rigetti/Ankaa-3"

# A GetDevice answer in the shape Braket gives for a Rigetti QPU, cut down to five qubits whose
# labels have gaps (0, 1, 2, 4, 7), as real devices' labels do.
ANKAA_CAPABILITIES = {
    "braketSchemaHeader": {
        "name": "braket.device_schema.rigetti.rigetti_device_capabilities",
        "version": "1",
    },
    "service": {
        "braketSchemaHeader": {"name": "braket.device_schema.device_service_properties", "version": "1"},
        "executionWindows": [
            {"executionDay": "Everyday", "windowStartHour": "00:00", "windowEndHour": "23:59:59"}
        ],
        "shotsRange": [10, 50000],
    },
    "action": {
        "braket.ir.openqasm.program": {
            "actionType": "braket.ir.openqasm.program",
            "version": ["1"],
            "supportedOperations": [
                "cnot",
                "cz",
                "h",
                "rx",
                "ry",
                "rz",
                "x",
                "v",
                "phaseshift",
                "swap",
                "iswap",
            ],
            "supportedResultTypes": [],
        }
    },
    "paradigm": {
        "braketSchemaHeader": {
            "name": "braket.device_schema.gate_model_qpu_paradigm_properties",
            "version": "1",
        },
        "qubitCount": 5,
        "nativeGateSet": ["rx", "rz", "iswap"],
        "connectivity": {
            "fullyConnected": False,
            "connectivityGraph": {"0": ["1"], "1": ["0", "2"], "2": ["1", "4"], "4": ["2", "7"], "7": ["4"]},
        },
    },
    "deviceParameters": {},
}


def test_stubbed_qpu_target_and_submission_on_physical_qubits() -> None:
    boto_session = boto3.Session(
        region_name="us-west-1", aws_access_key_id="AKIDSTUBBED", aws_secret_access_key="x"
    )
    session = AwsSession(boto_session=boto_session, braket_client=boto_session.client("braket"))
    sent: list[dict[str, Any]] = []
    session.braket_client.meta.events.register(
        "provide-client-params.braket.CreateQuantumTask", lambda params, **_: sent.append(dict(params))
    )
    device = {
        "deviceArn": ANKAA,
        "deviceName": "Ankaa-3",
        "providerName": "Rigetti",
        "deviceType": "QPU",
        "deviceStatus": "ONLINE",
        "deviceCapabilities": json.dumps(ANKAA_CAPABILITIES),
    }
    backend = BraketBackend(name="ankaa", device_arn=ANKAA, s3_bucket=BUCKET, aws_session=session)
    with Stubber(session.braket_client) as stubber:
        stubber.add_response("get_device", device, {"deviceArn": ANKAA})  # status check
        stubber.add_response("get_device", device, {"deviceArn": ANKAA})  # AwsDevice, once
        stubber.add_response(
            "create_quantum_task",
            {"quantumTaskArn": TASK_ARN},
            {
                "clientToken": "token-qpu",
                "deviceArn": ANKAA,
                "outputS3Bucket": BUCKET,
                "outputS3KeyPrefix": "qhybrid",
                "shots": 100,
                "tags": {TOKEN_TAG: "token-qpu"},
                "action": ANY,
                "deviceParameters": ANY,
            },
        )
        program = (
            'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[5] q;\nbit[2] c;\n'
            "x q[2];\ncz q[2], q[3];\nc[0] = measure q[3];\nc[1] = measure q[2];\n"
        )
        assert backend.submit(program, 100, "token-qpu") == TASK_ARN
        target = backend.target()
        stubber.assert_no_pending_responses()
    # The native gates (rx, rz, iswap) are not what the basis is: Braket compiles its supported
    # gates, and the program format carries only ours.
    assert set(target.qiskit_target.operation_names) >= {"iswap", "rx", "rz"}
    assert set(target.basis_gates) == {"cx", "cz", "h", "p", "rx", "ry", "rz", "swap", "sx", "x"}
    assert target.num_qubits == 5
    assert (
        target.coupling_map is not None
        and (2, 3) in target.coupling_map
        and (0, 4) not in target.coupling_map
    )
    # Program qubit i is device qubit labels[i]: q[3] is $4.
    source = json.loads(sent[0]["action"])["source"]
    assert "cz $2, $4;" in source
    assert "b[0] = measure $4;" in source
    parameters = json.loads(sent[0]["deviceParameters"])
    assert parameters["paradigmParameters"]["disableQubitRewiring"] is True
    assert sent[0]["clientToken"] == "token-qpu"


@pytest.mark.parametrize(
    ("device_status", "error"),
    [
        ("OFFLINE", PermanentBackendError),
        ("RETIRED", PermanentBackendError),
        ("PAUSED", TransientBackendError),
    ],
)
def test_stubbed_submit_checks_the_device_status(
    aws: StubbedAws, device_status: str, error: type[Exception]
) -> None:
    aws.device(device_status)
    with pytest.raises(error, match=device_status):
        aws.backend().submit(PROGRAM, 100, "token")


def test_stubbed_submit_refuses_a_program_off_the_grammar_before_any_call(aws: StubbedAws) -> None:
    # Checked with the gateway's bounded grammar before conversion: no AWS call is made (the
    # stubber has no answer queued, and would fail the test if one were).
    with pytest.raises(PermanentBackendError, match=r"refused at the boundary: .*measured once"):
        aws.backend().submit(PROGRAM.replace("c[3] = measure q[3];\n", ""), 100, "token")
    smuggling = PROGRAM.replace("x q[2];", "rz(0.717273838485868) q[2];")
    with pytest.raises(PermanentBackendError, match=r"refused at the boundary: .*literal"):
        aws.backend().submit(smuggling, 100, "token")


def _summary(arn: str, token: str | None, created: dt.datetime) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "quantumTaskArn": arn,
        "status": "QUEUED",
        "deviceArn": SV1,
        "shots": 100,
        "outputS3Bucket": BUCKET,
        "outputS3Directory": "tasks/x",
        "createdAt": created,
    }
    if token is not None:
        summary["tags"] = {TOKEN_TAG: token}
    return summary


def test_stubbed_find_task_pages_through_the_device_tasks_for_the_tag(aws: StubbedAws) -> None:
    now = dt.datetime.now(dt.UTC)
    search = {"filters": [{"name": "deviceArn", "operator": "EQUAL", "values": [SV1]}], "maxResults": 100}
    other = TASK_ARN.replace("5766fd9f", "00000000")
    aws.braket.add_response(
        "search_quantum_tasks",
        {
            "quantumTasks": [_summary(other, "someone-else", now), _summary(other, None, now)],
            "nextToken": "p2",
        },
        search,
    )
    aws.braket.add_response(
        "search_quantum_tasks",
        {"quantumTasks": [_summary(TASK_ARN, "token-123", now)], "nextToken": "p3"},
        {**search, "nextToken": "p2"},
    )
    assert aws.backend().find_task("token-123") == TASK_ARN


def test_stubbed_find_task_stops_at_tasks_older_than_the_window(aws: StubbedAws) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    search = {"filters": [{"name": "deviceArn", "operator": "EQUAL", "values": [SV1]}], "maxResults": 100}
    aws.braket.add_response(
        "search_quantum_tasks", {"quantumTasks": [_summary(TASK_ARN, "x", old)], "nextToken": "p2"}, search
    )
    assert aws.backend(search_hours=24).find_task("token-123") is None


@pytest.mark.parametrize("provider_state", sorted(BRAKET_STATES))
def test_stubbed_status_maps_every_braket_state(aws: StubbedAws, provider_state: str) -> None:
    extra: dict[str, Any] = {}
    if provider_state == "FAILED":
        extra["failureReason"] = "Device went away"
    if provider_state in ("CREATED", "QUEUED"):
        extra["queueInfo"] = {"queue": "QUANTUM_TASKS_QUEUE", "position": "17", "queuePriority": "Normal"}
    aws.task(provider_state, **extra)
    status = aws.backend().status(TASK_ARN)
    assert status.provider_state == provider_state
    assert status.state is BRAKET_STATES[provider_state]
    expected = {
        "CREATED": TaskState.QUEUED,
        "QUEUED": TaskState.QUEUED,
        "RUNNING": TaskState.RUNNING,
        "CANCELLING": TaskState.RUNNING,
        "COMPLETED": TaskState.COMPLETED,
        "FAILED": TaskState.FAILED,
        "CANCELLED": TaskState.CANCELLED,
    }[provider_state]
    assert status.state is expected
    assert status.queue_position == (17 if provider_state in ("CREATED", "QUEUED") else None)
    assert status.message == ("Device went away" if provider_state == "FAILED" else None)


def test_stubbed_status_reads_a_capped_queue_position(aws: StubbedAws) -> None:
    aws.task(
        "QUEUED", queueInfo={"queue": "QUANTUM_TASKS_QUEUE", "position": ">2000", "queuePriority": "Normal"}
    )
    assert aws.backend().status(TASK_ARN).queue_position == 2000


def test_stubbed_status_refuses_what_is_not_a_task_arn(aws: StubbedAws) -> None:
    with pytest.raises(PermanentBackendError, match="not a Braket quantum task ARN"):
        aws.backend().status("local-0123")


@pytest.mark.parametrize(
    ("code", "http_status", "error"),
    [
        ("ThrottlingException", 429, TransientBackendError),
        ("ServiceQuotaExceededException", 402, TransientBackendError),
        ("InternalServiceException", 500, TransientBackendError),
        ("SomethingNew", 503, TransientBackendError),
        ("ValidationException", 400, PermanentBackendError),
        ("AccessDeniedException", 403, PermanentBackendError),
        ("ResourceNotFoundException", 404, PermanentBackendError),
    ],
)
def test_stubbed_errors_are_sorted(
    aws: StubbedAws, code: str, http_status: int, error: type[Exception]
) -> None:
    aws.braket.add_client_error(
        "get_quantum_task",
        service_error_code=code,
        service_message="stubbed",
        http_status_code=http_status,
        response_meta={"HTTPHeaders": {"retry-after": "7"}},
    )
    with pytest.raises(error, match=code) as caught:
        aws.backend().status(TASK_ARN)
    if isinstance(caught.value, TransientBackendError):
        assert caught.value.retry_after == 7.0


def test_connection_and_credential_failures_are_sorted() -> None:
    assert isinstance(
        braket_error(EndpointConnectionError(endpoint_url="https://braket"), "x"), TransientBackendError
    )
    assert isinstance(
        braket_error(ReadTimeoutError(endpoint_url="https://braket"), "x"), TransientBackendError
    )
    assert isinstance(braket_error(NoCredentialsError(), "x"), PermanentBackendError)


def _results_json(measured_qubits: list[int], rows: list[list[int]], source: str) -> bytes:
    """A results.json as Braket writes it, built with the SDK's own result schema."""
    from braket.ir.openqasm import Program
    from braket.task_result import AdditionalMetadata, GateModelTaskResult, TaskMetadata

    result = GateModelTaskResult(
        measurements=rows,
        measuredQubits=measured_qubits,
        taskMetadata=TaskMetadata(id=TASK_ARN, shots=len(rows), deviceId=SV1),
        additionalMetadata=AdditionalMetadata(action=Program(source=source)),
    )
    text: str = result.json()
    return text.encode("utf-8")


def test_stubbed_result_downloads_results_json_and_orders_bits(aws: StubbedAws) -> None:
    source = (
        "OPENQASM 3.0;\nbit[3] b;\nqubit[3] q;\nx q[2];\n"
        "b[0] = measure q[2];\nb[1] = measure q[0];\nb[2] = measure q[1];\n"
    )
    # Columns in measured_qubits order [0, 1, 2]: q[2] (bit 0) is the last column.
    body = _results_json([0, 1, 2], [[0, 0, 1]] * 3 + [[0, 1, 1]], source)
    aws.task("COMPLETED", queue_info=False)
    aws.s3.add_response(
        "get_object",
        {"Body": StreamingBody(io.BytesIO(body), len(body))},
        {"Bucket": BUCKET, "Key": "tasks/5766fd9f/results.json"},
    )
    result = aws.backend().result(TASK_ARN)
    assert result.counts == {"100": 3, "101": 1}
    assert result.shots == 4
    assert result.metadata["results_s3_uri"] == f"s3://{BUCKET}/tasks/5766fd9f/results.json"


@pytest.mark.parametrize(
    ("provider_state", "error"),
    [
        ("FAILED", PermanentBackendError),
        ("CANCELLED", PermanentBackendError),
        ("RUNNING", TransientBackendError),
    ],
)
def test_stubbed_result_of_an_unfinished_or_failed_task(
    aws: StubbedAws, provider_state: str, error: type[Exception]
) -> None:
    aws.task(provider_state, queue_info=False)
    with pytest.raises(error, match=provider_state):
        aws.backend().result(TASK_ARN)


def test_stubbed_cancel_and_cancel_of_a_finished_task(aws: StubbedAws) -> None:
    backend = aws.backend()
    aws.braket.add_response(
        "cancel_quantum_task",
        {"quantumTaskArn": TASK_ARN, "cancellationStatus": "CANCELLING"},
        {"quantumTaskArn": TASK_ARN},
    )
    backend.cancel(TASK_ARN)
    aws.braket.add_client_error("cancel_quantum_task", "ConflictException", "task is COMPLETED", 409)
    aws.task("COMPLETED")
    backend.cancel(TASK_ARN)  # finished: nothing to do, no error
    aws.braket.add_client_error("cancel_quantum_task", "ThrottlingException", "slow down", 429)
    with pytest.raises(TransientBackendError):
        backend.cancel(TASK_ARN)


def test_stubbed_pricing_and_billed_seconds(aws: StubbedAws) -> None:
    sv1 = aws.backend()
    pricing = sv1.pricing()
    assert pricing is not None and pricing.per_second > 0
    assert sv1.estimated_seconds(1000) == 3.0
    qpu = aws.backend(device_arn="arn:aws:braket:us-west-1::device/qpu/rigetti/Ankaa-3", region="us-west-1")
    assert qpu.estimated_seconds(1000) == 0.0
    qpu_pricing = qpu.pricing()
    assert qpu_pricing is not None and qpu_pricing.estimate(1000) == pytest.approx(0.30 + 0.9)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(PermanentBackendError, match="not a Braket device ARN"):
        BraketBackend(name="b", device_arn="sv1", s3_bucket=BUCKET)
    with pytest.raises(PermanentBackendError, match="S3 bucket"):
        BraketBackend(name="b", device_arn=SV1, s3_bucket="")
    with pytest.raises(PermanentBackendError, match="QHYBRID_AWS_REGION"):
        BraketBackend(name="b", device_arn=SV1, s3_bucket=BUCKET)
    # The region comes from the operator, not from the request: another region, or any text in
    # the ARN's region field (which used to become braket.<text>.amazonaws.com), is refused.
    with pytest.raises(PermanentBackendError, match="not the configured us-east-1"):
        BraketBackend(name="b", device_arn=ANKAA, s3_bucket=BUCKET, region="us-east-1")
    for arn in (
        "arn:aws:braket:evil.example.com/x::device/qpu/rigetti/Ankaa-3",
        "arn:aws:braket:us-east-1.attacker::device/qpu/ionq/Forte-1",
    ):
        with pytest.raises(PermanentBackendError, match="not a Braket device ARN"):
            BraketBackend(name="b", device_arn=arn, s3_bucket=BUCKET, region="us-east-1")
