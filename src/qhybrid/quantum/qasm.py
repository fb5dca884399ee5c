"""A restricted, canonical OpenQASM 3 emitter.

This text is what crosses the security boundary to the QPU provider, so its shape is fixed and
small enough to audit and to parse with a strict grammar::

    OPENQASM 3.0;
    include "stdgates.inc";
    qubit[N] q;
    bit[M] c;
    name(p1,p2) q[i], q[j];
    c[k] = measure q[i];

One statement per line, the gates in circuit order, then one measurement per classical bit in
bit order (``c[0]`` first), each of a different qubit. Every parameter is an angle on the grid of
:func:`angle_literal`: reduced to ``[−π, π]``, rounded to a multiple of ``10⁻⁶`` rad and written
as ``repr`` of that float (``0.5``, ``-1.25``, ``1e-06``: at most 7 significant digits, no ``pi``,
no expressions, no identifiers). There are no comments, no other declarations, no classical
control. Barriers are dropped (they only constrain compilation) and so is the circuit's global
phase (unobservable).

Why a grid: the program is the one channel that crosses the boundary with room in it. A free
float literal can carry any 17 digits (the egress gateway was shown 78 bytes of text packed into
13 ``rz`` angles); on the grid each angle carries at most ``log2(2·3141593 + 1) ≈ 22.6`` bits, all
of them needed to say the angle. Hardware rotates to about ``10⁻⁴`` rad, so ``10⁻⁶`` is 100 times
finer than any device can use; ``benchmarks/angle_grid.py`` measures what the rounding does to
the sampled distribution. Reducing to ``[−π, π]`` is exact: ``p``/``cp`` have period 2π and
``rx``/``ry``/``rz`` change by a global phase of −1, which no measurement sees.
"""

from __future__ import annotations

import math

from qiskit import QuantumCircuit
from qiskit.circuit import ControlledGate, Instruction, Measure, ParameterExpression
from qiskit.circuit.library import get_standard_gate_name_mapping

#: Gates we emit: the subset of OpenQASM's ``stdgates.inc`` that device basis sets use (Pauli,
#: Clifford and T gates, single-qubit rotations, the phase gate, CX/CY/CZ, controlled phase and
#: SWAP). Qiskit spells them exactly as ``stdgates.inc`` does. Multi-controlled and deprecated
#: (``u1``/``u2``/``u3``) gates are left out, and so are gates such as ``rzz`` or ``ecr`` that
#: ``stdgates.inc`` does not define: the transpiler must decompose them first.
ALLOWED_GATES: frozenset[str] = frozenset(
    {
        "x",
        "y",
        "z",
        "h",
        "s",
        "sdg",
        "t",
        "tdg",
        "sx",
        "rx",
        "ry",
        "rz",
        "p",
        "cx",
        "cy",
        "cz",
        "cp",
        "swap",
    }
)

_STANDARD = get_standard_gate_name_mapping()

#: Angles are multiples of ``10**-ANGLE_DECIMALS`` rad ...
ANGLE_DECIMALS = 6
#: ... that is, of ``1 / ANGLE_SCALE`` rad ...
ANGLE_SCALE = 1_000_000
#: ... in ``[−ANGLE_MAX_STEPS, ANGLE_MAX_STEPS]`` steps, that is ``[−π, π]`` rounded to the grid.
ANGLE_MAX_STEPS = round(math.pi * ANGLE_SCALE)

#: The two-qubit gates of :data:`ALLOWED_GATES`: a device needs one of them to run our programs.
TWO_QUBIT_GATES: frozenset[str] = frozenset(g for g in ALLOWED_GATES if _STANDARD[g].num_qubits == 2)


def _check_gate(operation: Instruction, num_clbits: int) -> None:
    """Reject anything that is not the genuine standard gate its name claims to be."""
    name = operation.name
    if name not in ALLOWED_GATES:
        raise ValueError(f"gate {name!r} is not allowed in the exported program")
    reference = _STANDARD[name]
    if (
        operation.base_class is not reference.base_class
        or operation.num_qubits != reference.num_qubits
        or len(operation.params) != len(reference.params)
        or num_clbits != 0
    ):
        raise ValueError(f"instruction {name!r} is not the standard {name!r} gate")
    if isinstance(operation, ControlledGate) and operation.ctrl_state != (1 << operation.num_ctrl_qubits) - 1:
        raise ValueError(f"gate {name!r} with an open control is not allowed")


def _check_standard(name: str, num_clbits: int) -> None:
    """The checks :func:`_check_gate` leaves for a gate Qiskit stores as its standard gate."""
    if name not in ALLOWED_GATES:
        raise ValueError(f"gate {name!r} is not allowed in the exported program")
    if num_clbits != 0:
        raise ValueError(f"instruction {name!r} is not the standard {name!r} gate")


def angle_steps(value: float) -> int:
    """``value`` (radians) reduced to ``[−π, π]`` and rounded to the grid, in grid steps."""
    if not math.isfinite(value):
        raise ValueError(f"angle {value} is not finite")
    # Reduced only when off the grid's range: a grid point (even ±3.141593, just past ±π) is a
    # fixed point, so emitting a parsed program gives the same text.
    if abs(value) > ANGLE_MAX_STEPS / ANGLE_SCALE:
        value = math.remainder(value, 2.0 * math.pi)
    steps = round(value * ANGLE_SCALE)
    return max(-ANGLE_MAX_STEPS, min(ANGLE_MAX_STEPS, steps))


def grid_literal(steps: int) -> str:
    """The one spelling of the grid point ``steps · 10⁻⁶`` rad: ``repr`` of that float.

    ``steps / 10**6`` is the double nearest to the decimal, whose shortest round-trip form is that
    decimal itself (at most 7 significant digits), so each grid point has exactly one spelling.
    """
    return repr(steps / ANGLE_SCALE)


def angle_literal(value: float) -> str:
    """An angle as it crosses the boundary: reduced to ``[−π, π]``, on the grid, one spelling."""
    return grid_literal(angle_steps(value))


def _literal(parameter: object, gate: str) -> str:
    """A parameter as a grid literal (see :func:`angle_literal`)."""
    if type(parameter) is float:  # a bound angle, as the transpiler leaves them: the common case
        if not math.isfinite(parameter):
            raise ValueError(f"gate {gate!r} has a non-finite parameter {parameter}")
        return angle_literal(parameter)
    if isinstance(parameter, ParameterExpression) and parameter.parameters:
        raise ValueError(f"gate {gate!r} has a symbolic parameter {parameter}; bind it first")
    try:
        value = float(parameter)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise ValueError(f"gate {gate!r} has a non-real parameter {parameter!r}") from error
    if not math.isfinite(value):
        raise ValueError(f"gate {gate!r} has a non-finite parameter {value}")
    return angle_literal(value)


def to_openqasm3(circuit: QuantumCircuit) -> str:
    """The circuit as restricted, canonical OpenQASM 3 text (see the module docstring).

    Qubits and classical bits are numbered by their position in ``circuit.qubits`` and
    ``circuit.clbits``, whatever registers they came from. A gate that Qiskit stores natively as
    one of its standard gates is read from that record (name, angles), as Qiskit's transpiler and
    simulators read it; its Python object is not built, so a Python subclass of a standard gate
    is written as the standard gate Qiskit runs (tested). Any other instruction is checked on
    its Python object.

    Args:
        circuit: A circuit made only of :data:`ALLOWED_GATES`, measurements and barriers, with
            every parameter bound.

    Returns:
        The program text, ending with a newline.

    Raises:
        ValueError: On an empty register, a gate outside :data:`ALLOWED_GATES`, a symbolic or
            non-finite parameter, any other instruction (reset, classical control, ...), a
            classical bit not measured exactly once, a qubit measured twice, or a gate after a
            measurement on its qubit.
    """
    if circuit.num_qubits < 1 or circuit.num_clbits < 1:
        raise ValueError("the circuit needs at least one qubit and one classical bit")
    lines = [
        "OPENQASM 3.0;",
        'include "stdgates.inc";',
        f"qubit[{circuit.num_qubits}] q;",
        f"bit[{circuit.num_clbits}] c;",
    ]
    # Measurements go last, in bit order: a measured qubit takes no further gate (checked), and a
    # measurement commutes with gates on other qubits, so moving them there changes nothing.
    measured: dict[int, int] = {}  # classical bit -> qubit
    qubit_index = {qubit: i for i, qubit in enumerate(circuit.qubits)}
    clbit_index = {clbit: i for i, clbit in enumerate(circuit.clbits)}
    measured_qubits: set[int] = set()
    operand = [f"q[{index}]" for index in range(circuit.num_qubits)]
    for instruction in circuit.data:
        name = instruction.name
        if name == "barrier":
            continue
        qubits = [qubit_index[qubit] for qubit in instruction.qubits]
        if name == "measure":
            operation = instruction.operation
            if operation.base_class is not Measure or len(qubits) != 1 or len(instruction.clbits) != 1:
                raise ValueError("instruction 'measure' is not the standard measurement")
            clbit = clbit_index[instruction.clbits[0]]
            if clbit in measured or qubits[0] in measured.values():
                raise ValueError(f"classical bit {clbit} or qubit {qubits[0]} is measured twice")
            measured[clbit] = qubits[0]
            measured_qubits.add(qubits[0])
            continue
        if measured and not measured_qubits.isdisjoint(qubits):
            raise ValueError(f"gate {name!r} acts on a qubit after its measurement")
        if instruction.is_standard_gate():
            # Stored natively as Qiskit's standard gate of that name: its arity and parameter
            # count are the enum's and its controls are closed (an open control is another
            # name), so only the name and the classical bits are left to check, and the gate's
            # Python object (most of this export's time) is never built.
            _check_standard(name, len(instruction.clbits))
            params = instruction.params
        else:
            operation = instruction.operation
            _check_gate(operation, len(instruction.clbits))
            params = operation.params
        operands = ", ".join([operand[index] for index in qubits])
        if params:
            parameters = ",".join(_literal(parameter, name) for parameter in params)
            lines.append(f"{name}({parameters}) {operands};")
        else:
            lines.append(f"{name} {operands};")
    if sorted(measured) != list(range(circuit.num_clbits)):
        missing = sorted(set(range(circuit.num_clbits)) - set(measured))
        raise ValueError(f"every classical bit must be measured exactly once; not measured: {missing}")
    lines.extend(f"c[{clbit}] = measure q[{measured[clbit]}];" for clbit in range(circuit.num_clbits))
    return "\n".join(lines) + "\n"
