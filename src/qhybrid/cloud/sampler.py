"""Runs OpenQASM 3 programs on Qiskit Aer, standing in for the QPU.

Counts are returned with classical bit 0 as the FIRST character of every outcome. Qiskit prints
bit 0 last (and separates registers with spaces), so the outcomes are rebuilt here from Aer's
hexadecimal counts, where bit ``i`` of the integer is the circuit's classical bit ``i``.
"""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import qiskit_aer
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, qasm3, transpile
from qiskit.circuit import CircuitInstruction, Measure
from qiskit.circuit.library import get_standard_gate_name_mapping
from qiskit.exceptions import ExperimentalWarning
from qiskit_aer import AerSimulator


class ProgramError(ValueError):
    """The program cannot run on this device: it does not parse, or it is too large."""


class SimulationError(RuntimeError):
    """The simulator failed on a program that did parse."""


@dataclass(frozen=True)
class ProgramInfo:
    """What submission-time checks learn about a program.

    Attributes:
        num_qubits: Qubits the program uses.
        num_clbits: Classical bits, i.e. the width of every outcome.
    """

    num_qubits: int
    num_clbits: int


@dataclass(frozen=True)
class SimulationOutcome:
    """Counts and facts of one simulated task.

    Attributes:
        counts: Outcome (bit 0 first) → shots.
        metadata: Simulator facts worth returning to the client.
    """

    counts: dict[str, int]
    metadata: dict[str, Any]


def _describe_parse_error(exc: BaseException) -> str:
    """A human-readable reason for a failed parse.

    The OpenQASM parser raises syntax errors with an empty message and keeps the position in the
    ANTLR exception it chains, so the chain is searched for a token position.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip()
        if text and text != "None":
            return text
        for arg in current.args:
            token = getattr(arg, "offendingToken", None)
            line, column = getattr(token, "line", None), getattr(token, "column", None)
            if line is not None and column is not None:
                return f"syntax error at line {line}, column {column} near {getattr(token, 'text', '')!r}"
        current = current.__cause__ or current.__context__
    return f"{type(exc).__name__} while parsing"


_INCLUDE = re.compile(r'include\s*"([^"]*)"')


def _load_native(program: str) -> QuantumCircuit | None:
    """Qiskit's native (Rust) OpenQASM 3 importer, or ``None`` where it cannot read the program.

    It reads the programs a transpiler emits (``stdgates.inc`` gates, indexed measurements) in
    about 1.5 ms where the reference importer (ANTLR, pure Python) takes about 40 ms for a 5-qubit
    QAOA program, and the cloud parsed every program twice (at submission and before running it),
    which made parsing most of the emulated cloud's CPU per task. It is marked experimental and
    covers a subset of the language, so anything it refuses goes to the reference importer, which
    also words the error message. Programs that include anything but ``stdgates.inc`` go straight
    to the reference importer: the native one panics on a missing include file.
    """
    if any(match != "stdgates.inc" for match in _INCLUDE.findall(program)):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            circuit: QuantumCircuit = qasm3.loads_experimental(program)
    except (KeyboardInterrupt, SystemExit):
        raise
    # Any failure (unsupported feature, syntax error, or a Rust panic, which pyo3 raises as a
    # BaseException) means "ask the reference importer", never "refuse".
    except BaseException:
        return None
    return circuit


#: The gates the canonical reader takes (all in ``stdgates.inc``, where the importers give each the
#: Qiskit standard gate of that name): Qiskit's gate record, qubit count and parameter count.
_CANONICAL_NAMES = frozenset(
    ("x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "rx", "ry", "rz", "p", "cx", "cy", "cz", "cp", "swap")
)


def _canonical_gates() -> dict[str, tuple[Any, int, int]]:
    # ``_standard_gate`` is not public API: on a Qiskit without it the reader has no gates and
    # every program goes to the importers (see _canonical_reader_holds).
    try:
        return {
            name: (gate._standard_gate, gate.num_qubits, len(gate.params))
            for name, gate in get_standard_gate_name_mapping().items()
            if name in _CANONICAL_NAMES
        }
    except AttributeError:  # pragma: no cover - another Qiskit
        return {}


_CANONICAL_GATES = _canonical_gates()
_CANONICAL_HEAD = re.compile(
    r'OPENQASM 3\.0;\ninclude "stdgates\.inc";\nqubit\[([1-9][0-9]{0,5})\] q;\nbit\[([1-9][0-9]{0,5})\] c;\n'
)
_CANONICAL_INDEX = r"(?:0|[1-9][0-9]{0,5})"
_CANONICAL_GATE = re.compile(
    rf"([a-z]+)(?:\(([-0-9.e,]+)\))? (q\[{_CANONICAL_INDEX}\](?:, q\[{_CANONICAL_INDEX}\])*);"
)
_CANONICAL_ANGLE = re.compile(r"-?[0-9]+\.[0-9]+(?:e-?[0-9]+)?|-?[0-9]+e-?[0-9]+")
_CANONICAL_MEASURE = re.compile(rf"c\[({_CANONICAL_INDEX})\] = measure q\[({_CANONICAL_INDEX})\];")
_CANONICAL_QUBIT = re.compile(r"q\[([0-9]+)\]")
_MEASURE = Measure()


def _load_canonical(program: str) -> QuantumCircuit | None:
    """The circuit of a program in the trusted zone's canonical form, or ``None`` for any other text.

    The trusted zone sends one shape of program (``quantum/qasm.py``): the header, one standard
    gate per line with decimal angles, then ``c[k] = measure q[i];`` lines. Read line by line
    here, it gives the very circuit Qiskit's native importer builds (registers ``q`` and ``c``,
    each gate as Qiskit's standard gate, tested equal on every gate and on job programs) without
    its Python gate object per line, about half of the parse (``docs/benchmarks.md``). Anything
    else (other gates, spellings, spacing, an index out of range) gets ``None`` and goes to the
    importers, which then accept or refuse it as before.
    """
    head = _CANONICAL_HEAD.match(program)
    if head is None or not program.endswith("\n"):
        return None
    num_qubits, num_clbits = int(head[1]), int(head[2])
    circuit = QuantumCircuit(QuantumRegister(num_qubits, "q"), ClassicalRegister(num_clbits, "c"))
    qubits, clbits, append = circuit.qubits, circuit.clbits, circuit._append
    # The checked qubits of each operand text seen (a program repeats a few dozen of them).
    operand_bits: dict[str, tuple[Any, ...]] = {}
    for line in program[head.end() : -1].split("\n"):
        gate = _CANONICAL_GATE.fullmatch(line)
        if gate is None:
            measure = _CANONICAL_MEASURE.fullmatch(line)
            if measure is None:
                return None
            clbit, qubit = int(measure[1]), int(measure[2])
            if clbit >= num_clbits or qubit >= num_qubits:
                return None
            append(CircuitInstruction(_MEASURE, (qubits[qubit],), (clbits[clbit],)))
            continue
        known = _CANONICAL_GATES.get(gate[1])
        if known is None:
            return None
        record, arity, count = known
        bits = operand_bits.get(gate[3])
        if bits is None:
            operands = [int(index) for index in _CANONICAL_QUBIT.findall(gate[3])]
            if len(set(operands)) != len(operands) or max(operands) >= num_qubits:
                return None
            bits = operand_bits[gate[3]] = tuple(qubits[index] for index in operands)
        if len(bits) != arity:
            return None
        literals = [] if gate[2] is None else gate[2].split(",")
        if len(literals) != count or not all(_CANONICAL_ANGLE.fullmatch(text) for text in literals):
            return None
        params = tuple(float(text) for text in literals)
        append(
            CircuitInstruction.from_standard(record, bits, params),
            _standard_gate=True,
        )
    return circuit


def _canonical_reader_holds(reader: Callable[[str], QuantumCircuit | None]) -> bool:
    """Whether ``reader`` gives the native importer's circuit for a program using every gate it takes.

    The canonical reader builds instructions through Qiskit records that are not public API
    (``CircuitInstruction.from_standard``, ``_append(..., _standard_gate=True)``); a Qiskit release
    may change them. Checked once at import: where it does not hold, every program goes to the
    importers (the same circuits, slower).
    """
    lines = ["OPENQASM 3.0;", 'include "stdgates.inc";', "qubit[3] q;", "bit[3] c;"]
    for name in sorted(_CANONICAL_NAMES):
        gate = get_standard_gate_name_mapping()[name]
        operands = "q[1]" if gate.num_qubits == 1 else "q[2], q[0]"
        angles = f"({','.join(['0.375'] * len(gate.params))})" if gate.params else ""
        lines.append(f"{name}{angles} {operands};")
    lines += [f"c[{k}] = measure q[{2 - k}];" for k in range(3)]
    program = "\n".join(lines) + "\n"
    try:
        expected = _load_native(program)
        return expected is not None and reader(program) == expected
    except Exception:
        return False


_CANONICAL_READER_HOLDS = _canonical_reader_holds(_load_canonical)


def load_program(program: str) -> QuantumCircuit:
    """Parse OpenQASM 3 text into a circuit (native importer first, the reference one otherwise).

    A program in the trusted zone's canonical form is read by :func:`_load_canonical`, which
    gives the circuit the native importer gives, faster.

    Raises:
        ProgramError: With a readable reason if the text is empty or does not parse.
    """
    if not program.strip():
        raise ProgramError("program is empty")
    circuit = _load_canonical(program) if _CANONICAL_READER_HOLDS else None
    if circuit is not None:
        return circuit
    circuit = _load_native(program)
    if circuit is not None:
        return circuit
    try:
        return qasm3.loads(program)
    # The importer raises several unrelated exception types (parser, converter, even
    # AttributeError on odd input); every one of them means "this program is not acceptable".
    except Exception as exc:
        raise ProgramError(f"program is not valid OpenQASM 3: {_describe_parse_error(exc)}") from exc


def check_program(program: str, *, max_qubits: int) -> ProgramInfo:
    """Parse a program and check that the device can run it.

    Raises:
        ProgramError: If it does not parse, uses more than ``max_qubits`` qubits or measures nothing.
    """
    circuit = load_program(program)
    info = _check_circuit(circuit, max_qubits=max_qubits)
    _remember(program, circuit)
    return info


#: Circuits parsed at submission, kept for the run that usually follows (program text -> circuit).
_PARSED: OrderedDict[str, QuantumCircuit] = OrderedDict()
_PARSED_LOCK = threading.Lock()
#: At most this many, of programs at most this long: a few MB of memory at worst.
_PARSED_MAX = 64
_PARSED_MAX_CHARS = 100_000


def _remember(program: str, circuit: QuantumCircuit) -> None:
    if len(program) > _PARSED_MAX_CHARS:
        return
    with _PARSED_LOCK:
        _PARSED[program] = circuit
        _PARSED.move_to_end(program)
        while len(_PARSED) > _PARSED_MAX:
            _PARSED.popitem(last=False)


def _parsed_once(program: str) -> QuantumCircuit:
    """The circuit the submission check parsed (taken, so it is used once), else a fresh parse."""
    with _PARSED_LOCK:
        circuit = _PARSED.pop(program, None)
    return circuit if circuit is not None else load_program(program)


def _check_circuit(circuit: QuantumCircuit, *, max_qubits: int) -> ProgramInfo:
    if circuit.num_qubits > max_qubits:
        raise ProgramError(f"program uses {circuit.num_qubits} qubits; the device has {max_qubits}")
    if circuit.num_clbits == 0:
        # Without classical bits there is no outcome to count.
        raise ProgramError("program has no classical bits: measure into a bit register")
    return ProgramInfo(num_qubits=circuit.num_qubits, num_clbits=circuit.num_clbits)


def _bit0_first(hex_key: str, width: int) -> str:
    value = int(hex_key, 16)
    return "".join("1" if (value >> bit) & 1 else "0" for bit in range(width))


_SIMULATOR = threading.local()
#: Aer's default ``statevector_parallel_threshold``: smaller states are simulated on one thread.
_PARALLEL_QUBITS = 14


def _simulator() -> tuple[AerSimulator, frozenset[str]]:
    """This thread's simulator and the instructions it runs natively, made once.

    The seed is given to each run, so one simulator serves every task; building it and reading its
    target for every task cost more than running a small circuit.
    """
    cached: tuple[AerSimulator, frozenset[str]] | None = getattr(_SIMULATOR, "value", None)
    if cached is None:
        simulator = AerSimulator()
        cached = (simulator, frozenset(simulator.target.operation_names) | {"measure", "barrier", "reset"})
        _SIMULATOR.value = cached
    return cached


def simulate(program: str, *, shots: int, seed: int, max_qubits: int) -> SimulationOutcome:
    """Run ``program`` for ``shots`` shots with a fixed simulator seed.

    Raises:
        ProgramError: If the program is refused (see :func:`check_program`).
        SimulationError: If Aer cannot run it (unknown instruction, not enough memory...).
    """
    # Parsed when it was submitted, in the usual case: the same text gives the same circuit.
    circuit = _parsed_once(program)
    info = _check_circuit(circuit, max_qubits=max_qubits)
    simulator, supported = _simulator()
    if any(instruction.operation.name not in supported for instruction in circuit.data):
        # Custom gate definitions reach Aer as opaque instructions; unrolling them is the only
        # rewrite done, so that plain programs run exactly as written.
        try:
            circuit = transpile(circuit, simulator, optimization_level=0)
        except Exception as exc:
            raise SimulationError(f"cannot translate the program for the simulator: {exc}") from exc
    started = time.perf_counter()
    try:
        # Below Aer's own threshold for parallelising the state (14 qubits) extra threads have
        # nothing to share but OpenMP's start-up and spinning: 12 ms of CPU per 5-qubit task
        # instead of 5 on this 2-core machine. The emulated QPU runs one task at a time anyway.
        threads = 1 if circuit.num_qubits < _PARALLEL_QUBITS else 0
        result = simulator.run(
            circuit, shots=shots, seed_simulator=seed, max_parallel_threads=threads
        ).result()
    except Exception as exc:
        raise SimulationError(f"simulation failed: {exc}") from exc
    elapsed = time.perf_counter() - started
    if not result.success:
        raise SimulationError(f"simulation failed: {result.status}")
    raw_counts: dict[str, int] = result.data(0).get("counts", {})
    counts: dict[str, int] = {}
    for hex_key, count in raw_counts.items():
        outcome = _bit0_first(hex_key, info.num_clbits)
        counts[outcome] = counts.get(outcome, 0) + int(count)
    run_metadata: dict[str, Any] = dict(result.results[0].metadata or {})
    metadata: dict[str, Any] = {
        "simulator": f"qiskit-aer {qiskit_aer.__version__}",
        "method": run_metadata.get("method"),
        "seed_simulator": seed,
        "num_qubits": info.num_qubits,
        "num_clbits": info.num_clbits,
        "simulation_seconds": round(elapsed, 6),
    }
    return SimulationOutcome(counts=counts, metadata=metadata)


_BIT_REGISTER = re.compile(r"^\s*bit(?:\[(\d+)\])?\s+\w+\s*;", re.MULTILINE)


def sample_instant(program: str, *, shots: int, seed: int, max_qubits: int) -> SimulationOutcome:
    """The throughput-testing device ``emulated-instant``: uniform random shots, nothing simulated.

    Each shot is drawn uniformly over the program's classical bits (counted from its ``bit``
    declarations; the program was parsed and checked when it was submitted), so the counts say
    nothing about the circuit: a client sees ``"simulator": "none (emulated-instant: uniform
    random shots)"`` in the metadata. It exists to measure everything but simulation.

    Raises:
        ProgramError: If the program declares no classical bit.
    """
    width = sum(int(size) if size else 1 for size in _BIT_REGISTER.findall(program))
    if width == 0:
        width = check_program(program, max_qubits=max_qubits).num_clbits
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, size=(shots, width), dtype=np.uint8)
    outcomes, counts = np.unique(bits, axis=0, return_counts=True)
    return SimulationOutcome(
        counts={"".join(map(str, row)): int(n) for row, n in zip(outcomes.tolist(), counts, strict=True)},
        metadata={
            "simulator": "none (emulated-instant: uniform random shots)",
            "seed_simulator": seed,
            "num_clbits": width,
            "simulation_seconds": round(time.perf_counter() - started, 6),
        },
    )
