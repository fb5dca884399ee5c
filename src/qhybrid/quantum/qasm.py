"""A restricted, canonical OpenQASM 3 emitter.

This text is what crosses the security boundary to the QPU provider, so its shape is fixed and
small enough to audit and to parse with a strict grammar::

    OPENQASM 3.0;
    include "stdgates.inc";
    qubit[N] q;
    bit[M] c;
    name(p1,p2) q[i], q[j];
    c[k] = measure q[i];

One statement per line, in circuit order; parameters are plain decimal float literals written
with ``repr(float(p))`` (``0.5``, ``-1.25``, ``1e-05``: no ``pi``, no expressions, no
identifiers). There are no comments, no other declarations, no classical control. Barriers are
dropped (they only constrain compilation) and so is the circuit's global phase (unobservable).
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


def _literal(parameter: object, gate: str) -> str:
    """A parameter as a plain float literal."""
    if isinstance(parameter, ParameterExpression) and parameter.parameters:
        raise ValueError(f"gate {gate!r} has a symbolic parameter {parameter}; bind it first")
    try:
        value = float(parameter)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise ValueError(f"gate {gate!r} has a non-real parameter {parameter!r}") from error
    if not math.isfinite(value):
        raise ValueError(f"gate {gate!r} has a non-finite parameter {value}")
    return repr(value)


def to_openqasm3(circuit: QuantumCircuit) -> str:
    """The circuit as restricted, canonical OpenQASM 3 text (see the module docstring).

    Qubits and classical bits are numbered by their position in ``circuit.qubits`` and
    ``circuit.clbits``, whatever registers they came from.

    Args:
        circuit: A circuit made only of :data:`ALLOWED_GATES`, measurements and barriers, with
            every parameter bound.

    Returns:
        The program text, ending with a newline.

    Raises:
        ValueError: On an empty register, a gate outside :data:`ALLOWED_GATES`, a symbolic or
            non-finite parameter, or any other instruction (reset, classical control, ...).
    """
    if circuit.num_qubits < 1 or circuit.num_clbits < 1:
        raise ValueError("the circuit needs at least one qubit and one classical bit")
    lines = [
        "OPENQASM 3.0;",
        'include "stdgates.inc";',
        f"qubit[{circuit.num_qubits}] q;",
        f"bit[{circuit.num_clbits}] c;",
    ]
    for instruction in circuit.data:
        operation = instruction.operation
        name = operation.name
        if name == "barrier":
            continue
        qubits = [circuit.find_bit(qubit).index for qubit in instruction.qubits]
        if name == "measure":
            if operation.base_class is not Measure or len(qubits) != 1 or len(instruction.clbits) != 1:
                raise ValueError("instruction 'measure' is not the standard measurement")
            clbit = circuit.find_bit(instruction.clbits[0]).index
            lines.append(f"c[{clbit}] = measure q[{qubits[0]}];")
            continue
        _check_gate(operation, len(instruction.clbits))
        operands = ", ".join(f"q[{index}]" for index in qubits)
        if operation.params:
            parameters = ",".join(_literal(parameter, name) for parameter in operation.params)
            lines.append(f"{name}({parameters}) {operands};")
        else:
            lines.append(f"{name} {operands};")
    return "\n".join(lines) + "\n"
