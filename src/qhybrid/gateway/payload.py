"""The boundary payload contract: exactly what may cross from the trusted zone to a provider.

A submission carries a device name, a shot count, a client token the gateway minted
(:mod:`qhybrid.gateway.tokens`) and one program in the canonical OpenQASM 3 that
:func:`qhybrid.quantum.qasm.to_openqasm3` writes::

    OPENQASM 3.0;
    include "stdgates.inc";
    qubit[N] q;
    bit[M] c;
    name(p1,p2) q[i], q[j];
    c[0] = measure q[i];
    c[1] = measure q[j];

:func:`validate_program` is not an OpenQASM parser: it accepts that one shape, line by line, and
refuses everything else, so nothing but gate names, angles and qubit indices can ride along (no
comments, strings, identifiers, definitions or control flow that could smuggle data). What can
ride along is bounded as well:

* every angle is a point of the emitter's grid (:func:`qhybrid.quantum.qasm.angle_literal`):
  a multiple of ``10⁻⁶`` rad in ``[−π, π]`` written one way, at most 7 significant digits, so
  about 22.6 bits per angle instead of 64 of a free float;
* the number of gates is at most :func:`gate_bound` for the measured width and the largest QAOA
  depth a request may ask for (:data:`MAX_REPS`);
* the measurements close the program: ``c[0]``, ``c[1]``, ... in order, each bit once, each of a
  different qubit, and no gate after them.

Each refusal is a :class:`PayloadError` naming the line and the rule broken:

``size``         the program, a register or a count is larger than allowed
``encoding``     a byte outside printable ASCII (non-ASCII, tab, carriage return, NUL...)
``layout``       a blank line, a missing final newline, an empty program
``header``       the ``OPENQASM 3.0;`` line or the header as a whole is missing or different
``include``      an include other than ``include "stdgates.inc";``
``register``     a register declaration other than ``qubit[N] q;`` / ``bit[M] c;``, or an
                 operand naming another register
``comment``      ``//`` or ``/* */``
``string``       a string literal outside the include line
``definition``   ``gate``, ``def``, ``defcal``... definitions
``control``      ``if``, ``while``, ``for``... classical control
``declaration``  a declaration after the header
``statement``    any other statement, or a line that is not a statement
``gate``         a gate outside :data:`~qhybrid.quantum.qasm.ALLOWED_GATES`, or a gate modifier
``arity``        the wrong number of qubit operands for the gate
``parameters``   the wrong number of parameters for the gate
``literal``      a parameter that is not a float literal in ``repr(float)`` form (``pi``,
                 identifiers, expressions, ``+1.0``, ``1_0``...), or not a point of the grid
                 written as the emitter writes it
``non-finite``   a NaN or infinite parameter
``angle``        an angle outside ``[−π, π]`` (as rounded to the grid)
``operand``      an operand that is not ``q[i]``
``index``        a qubit or bit index out of range, or the same qubit twice in one gate
``measure``      a measurement other than ``c[k] = measure q[i];``, out of bit order, of a qubit
                 measured before, a gate after the measurements, or a bit left unmeasured
``gates``        more gates than :func:`gate_bound` allows for the program's width
``submission``   a task body that is not exactly ``{device, program, shots, client_token}`` with
                 the expected types and ranges, the configured device and a minted token
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from qhybrid.gateway.tokens import TokenMinter
from qhybrid.quantum.circuit import dicke_circuit
from qhybrid.quantum.qasm import ALLOWED_GATES, ANGLE_DECIMALS, ANGLE_MAX_STEPS, ANGLE_SCALE, grid_literal
from qhybrid.quantum.subspace import ring_edges

#: Qubit operands and parameters of every allowed gate, as ``stdgates.inc`` defines them.
GATE_SIGNATURES: Mapping[str, tuple[int, int]] = {
    "x": (1, 0),
    "y": (1, 0),
    "z": (1, 0),
    "h": (1, 0),
    "s": (1, 0),
    "sdg": (1, 0),
    "t": (1, 0),
    "tdg": (1, 0),
    "sx": (1, 0),
    "rx": (1, 1),
    "ry": (1, 1),
    "rz": (1, 1),
    "p": (1, 1),
    "cx": (2, 0),
    "cy": (2, 0),
    "cz": (2, 0),
    "cp": (2, 1),
    "swap": (2, 0),
}

# A new gate in the emitter must come with its signature here: fail at import, not at the boundary.
if set(GATE_SIGNATURES) != set(ALLOWED_GATES):  # pragma: no cover - guards a future edit
    raise RuntimeError(
        "gateway GATE_SIGNATURES and quantum.qasm.ALLOWED_GATES disagree: "
        f"{sorted(set(GATE_SIGNATURES) ^ set(ALLOWED_GATES))}"
    )

HEADER_VERSION = "OPENQASM 3.0;"
HEADER_INCLUDE = 'include "stdgates.inc";'

#: Keys of the cloud's ``POST /v1/tasks`` body, all required, nothing else.
SUBMISSION_KEYS: frozenset[str] = frozenset({"device", "program", "shots", "client_token"})

#: The largest QAOA depth ``p`` a request may ask for (``SolverOptions.reps`` is ``le=8``; a test
#: keeps the two equal). The gate bound is taken at this depth: the gateway trusts no caller's
#: word about the depth of the program it checks.
MAX_REPS = 8
#: SWAPs the routing may add per native two-qubit gate. Qiskit's SABRE router added at most 0.37
#: per gate for dense QAOA circuits on a heavy-hex device (FakeTorino, n ≤ 24; ``docs/security.md``),
#: none on an all-to-all device: one per gate is almost three times the worst seen.
ROUTING_SWAPS_PER_GATE = 1
#: Basis gates in one run of single-qubit gates once optimised: ``rz·sx·rz·sx·rz`` (a general U).
ONE_QUBIT_RUN = 5


@lru_cache(maxsize=128)
def _dicke_two_qubit_gates(num_qubits: int) -> int:
    """Two-qubit gates of the costliest Dicke-state preparation on ``num_qubits`` (any weight)."""
    counts = (
        sum(1 for step in dicke_circuit(num_qubits, weight).data if step.operation.num_qubits == 2)
        for weight in range(num_qubits + 1)
    )
    return max(counts)


def native_two_qubit_gates(num_qubits: int, reps: int) -> int:
    """Two-qubit gates of a QAOA circuit before routing, counted from the circuit builders.

    Per layer (:mod:`qhybrid.quantum.circuit`): one ``RZZ`` per pair of qubits (a dense problem
    couples every pair), two CX each; for the XY mixer one ``RXX`` and one ``RYY`` per ring edge,
    two CX each; before the layers the XY mixer's Dicke state (counted from
    :func:`~qhybrid.quantum.circuit.dicke_circuit` at its costliest weight). The ``x`` and
    ``x-warm`` mixers and the warm start add single-qubit gates only. The costliest mixer is taken.
    """
    n = num_qubits
    per_layer = 2 * (n * (n - 1) // 2) + 4 * len(ring_edges(n))
    return reps * per_layer + (_dicke_two_qubit_gates(n) if n >= 1 else 0)


def gate_bound(num_qubits: int, reps: int = MAX_REPS) -> int:
    """The most gates a transpiled QAOA program on ``num_qubits`` measured qubits may hold.

    ``T = N2 · (1 + 3·s)`` two-qubit gates, with ``N2`` from :func:`native_two_qubit_gates` and
    ``s`` = :data:`ROUTING_SWAPS_PER_GATE` SWAPs of 3 CX each; and at most one optimised run of
    :data:`ONE_QUBIT_RUN` single-qubit gates before each qubit's first gate and after each
    two-qubit gate on each of its two qubits: ``5 · (2T + n)``. Total ``T + 5·(2T + n)``.

    Args:
        num_qubits: Measured qubits (the program's classical bits: the sent problem's width).
        reps: QAOA layers; :data:`MAX_REPS` by default.

    Returns:
        The bound.
    """
    two_qubit = native_two_qubit_gates(num_qubits, reps) * (1 + 3 * ROUTING_SWAPS_PER_GATE)
    return two_qubit + ONE_QUBIT_RUN * (2 * two_qubit + num_qubits)


_NUMBER = r"(0|[1-9][0-9]*)"  # decimal without leading zeros: one spelling per number
_QUBIT_DECLARATION = re.compile(rf"qubit\[{_NUMBER}\] q;")
_BIT_DECLARATION = re.compile(rf"bit\[{_NUMBER}\] c;")
_MEASUREMENT = re.compile(rf"c\[{_NUMBER}\] = measure q\[{_NUMBER}\];")
_OPERAND = re.compile(rf"q\[{_NUMBER}\]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The shapes repr(float) produces for finite values: 0.5, -1.25, 1e-05, 1.5e+20.
_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?(e[+-][0-9]+)?")
_TOKEN = re.compile(r"[0-9a-f]{32}")  # secrets.token_hex(16)
_DEVICE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_FORBIDDEN_CHARACTER = re.compile(r"[^\x20-\x7e\n]")

_DEFINITIONS = frozenset({"gate", "def", "defcal", "cal", "extern", "opaque", "box"})
_CONTROL = frozenset(
    {"if", "else", "while", "for", "switch", "case", "default", "break", "continue", "return", "end"}
)
_DECLARATIONS = frozenset(
    {
        "qubit", "bit", "qreg", "creg", "int", "uint", "float", "angle", "bool", "complex", "const",
        "input", "output", "let", "array", "duration", "stretch", "mutable", "readonly",
    }
)  # fmt: skip
_OTHER_STATEMENTS = frozenset({"reset", "barrier", "delay", "pragma", "gphase", "defcalgrammar"})


class PayloadError(ValueError):
    """A program or task body that the boundary contract refuses.

    Attributes:
        line: 1-based line of the program where the problem is; 0 for the whole payload.
        rule: Which rule was broken (see the module docstring).
        detail: What was found, in words.
    """

    def __init__(self, line: int, rule: str, detail: str) -> None:
        self.line = line
        self.rule = rule
        self.detail = detail
        where = f"line {line}" if line else "payload"
        super().__init__(f"{where}: {rule}: {detail}")


@dataclass(frozen=True)
class ProgramFacts:
    """What a valid program consists of.

    Attributes:
        qubits: Size of the ``q`` register.
        clbits: Size of the ``c`` register.
        gate_counts: Applications of each gate, by name (gates never used are absent).
        measurements: Number of ``c[k] = measure q[i];`` statements.
    """

    qubits: int
    clbits: int
    gate_counts: dict[str, int] = field(default_factory=dict)
    measurements: int = 0


def _check_characters(text: str) -> None:
    """Printable ASCII and newlines only, reported at the first offending line."""
    found = _FORBIDDEN_CHARACTER.search(text)
    if found is None:
        return
    character = found.group(0)
    kind = "carriage return" if character == "\r" else f"character {character!r}"
    if not character.isascii():
        kind = f"non-ASCII {kind}"
    number = text.count("\n", 0, found.start()) + 1
    raise PayloadError(number, "encoding", f"{kind} is not allowed (printable ASCII only)")


def _check_header(lines: list[str], max_qubits: int) -> tuple[int, int]:
    """The four header lines; returns the register sizes."""

    def missing(number: int) -> PayloadError:
        return PayloadError(number, "header", "the header (version, include, qubit, bit) is incomplete")

    first = lines[0] if lines else ""
    if first != HEADER_VERSION:
        if first.startswith("OPENQASM"):
            raise PayloadError(1, "header", f"the version line must be exactly {HEADER_VERSION!r}")
        raise PayloadError(1, "header", f"the program must start with {HEADER_VERSION!r}")
    if len(lines) < 2:
        raise missing(2)
    if lines[1] != HEADER_INCLUDE:
        if lines[1].startswith("include"):
            raise PayloadError(2, "include", f"only {HEADER_INCLUDE!r} may be included")
        raise PayloadError(2, "header", f"line 2 must be {HEADER_INCLUDE!r}")
    sizes: list[int] = []
    for number, pattern, keyword, name in (
        (3, _QUBIT_DECLARATION, "qubit", "q"),
        (4, _BIT_DECLARATION, "bit", "c"),
    ):
        if len(lines) < number:
            raise missing(number)
        line = lines[number - 1]
        match = pattern.fullmatch(line)
        if match is None:
            if not line.startswith(keyword):
                raise PayloadError(number, "header", f"line {number} must declare {keyword}[n] {name};")
            raise PayloadError(
                number, "register", f"the {keyword} register must be declared as {keyword}[n] {name};"
            )
        size = int(match.group(1))
        if size < 1:
            raise PayloadError(number, "register", f"the {keyword} register must not be empty")
        if size > max_qubits:
            raise PayloadError(number, "size", f"{keyword}[{size}] is more than the {max_qubits} allowed")
        sizes.append(size)
    return sizes[0], sizes[1]


def _check_literal(number: int, text: str) -> None:
    """An angle on the emitter's grid, in the emitter's one spelling."""
    if text.lstrip("+-").lower() in ("nan", "inf", "infinity"):
        raise PayloadError(number, "non-finite", f"parameter {text!r} is not finite")
    if _FLOAT.fullmatch(text) is None:
        raise PayloadError(
            number,
            "literal",
            f"parameter {text!r} is not a float literal (no constants, names or expressions)",
        )
    value = float(text)
    if not math.isfinite(value):
        raise PayloadError(number, "non-finite", f"parameter {text!r} is not finite")
    if abs(value) > 4.0:  # far outside [-π, π]; also keeps the arithmetic below finite
        raise PayloadError(number, "angle", f"angle {text} is outside [-pi, pi]")
    steps = round(value * ANGLE_SCALE)
    if abs(steps) > ANGLE_MAX_STEPS:
        raise PayloadError(number, "angle", f"angle {text} is outside [-pi, pi]")
    if grid_literal(steps) != text:
        # One spelling per grid point, the emitter's: no room for extra digits to carry data.
        raise PayloadError(
            number,
            "literal",
            f"parameter {text!r} is not an angle on the 1e-{ANGLE_DECIMALS} rad grid written as "
            f"{grid_literal(steps)!r}",
        )


def _qubit_index(number: int, operand: str, qubits: int) -> int:
    match = _OPERAND.fullmatch(operand)
    if match is None:
        if re.fullmatch(rf"[A-Za-z_][A-Za-z0-9_]*\[{_NUMBER}\]", operand) and not operand.startswith("q["):
            raise PayloadError(number, "register", f"operand {operand!r} names a register other than q")
        raise PayloadError(number, "operand", f"operand {operand!r} is not of the form q[i]")
    index = int(match.group(1))
    if index >= qubits:
        raise PayloadError(number, "index", f"qubit index {index} is out of range for qubit[{qubits}]")
    return index


def _check_measurement(number: int, line: str, qubits: int, clbits: int) -> tuple[int, int]:
    """One measurement; returns ``(bit, qubit)``."""
    match = _MEASUREMENT.fullmatch(line)
    if match is None:
        raise PayloadError(number, "measure", "a measurement must read exactly 'c[k] = measure q[i];'")
    clbit, qubit = int(match.group(1)), int(match.group(2))
    if clbit >= clbits:
        raise PayloadError(number, "index", f"bit index {clbit} is out of range for bit[{clbits}]")
    if qubit >= qubits:
        raise PayloadError(number, "index", f"qubit index {qubit} is out of range for qubit[{qubits}]")
    return clbit, qubit


def _check_gate(number: int, line: str, qubits: int) -> str:
    """One gate application; returns the gate's name."""
    if not line.endswith(";"):
        raise PayloadError(number, "statement", "a statement must end with ';'")
    body = line[:-1]
    head = _IDENTIFIER.match(body)
    if head is None:
        raise PayloadError(number, "statement", "not a gate application or measurement")
    name = head.group(0)
    rest = body[head.end() :]
    if name not in GATE_SIGNATURES:
        raise PayloadError(number, "gate", f"gate {name!r} is not allowed")
    operand_count, parameter_count = GATE_SIGNATURES[name]
    parameters: list[str] = []
    if rest.startswith("("):
        close = rest.rfind(") ")
        if close < 0:
            raise PayloadError(number, "statement", f"gate {name!r}: parameter list not closed by ') '")
        parameters = rest[1:close].split(",")
        rest = rest[close + 1 :]
    if not rest.startswith(" ") or rest.startswith("  "):
        raise PayloadError(number, "statement", f"gate {name!r}: expected one space before the operands")
    if len(parameters) != parameter_count:
        raise PayloadError(
            number, "parameters", f"gate {name!r} takes {parameter_count} parameter(s), got {len(parameters)}"
        )
    for parameter in parameters:
        _check_literal(number, parameter)
    # Each operand's form first, so that 'q[0],q[1]' is reported as what it is, not as one operand.
    indices = [_qubit_index(number, operand, qubits) for operand in rest[1:].split(", ")]
    if len(indices) != operand_count:
        raise PayloadError(
            number, "arity", f"gate {name!r} takes {operand_count} qubit(s), got {len(indices)}"
        )
    if len(set(indices)) != len(indices):
        raise PayloadError(number, "index", f"gate {name!r} applied to the same qubit twice")
    return name


def _classify_and_check(number: int, line: str, qubits: int, clbits: int) -> str | tuple[int, int]:
    """One statement line; returns the gate name, or ``(bit, qubit)`` for a measurement."""
    if "//" in line or "/*" in line or "*/" in line:
        raise PayloadError(number, "comment", "comments are not allowed")
    if '"' in line or "'" in line:
        raise PayloadError(number, "string", "string literals are not allowed")
    if "@" in line:
        raise PayloadError(number, "gate", "gate modifiers (ctrl @, inv @, pow @...) are not allowed")
    head = _IDENTIFIER.match(line)
    word = head.group(0) if head else ""
    if word in _DEFINITIONS:
        raise PayloadError(number, "definition", f"{word!r} definitions are not allowed")
    if word in _CONTROL:
        raise PayloadError(number, "control", f"classical control ({word!r}) is not allowed")
    if word in _DECLARATIONS:
        raise PayloadError(number, "declaration", "declarations are only allowed in the header")
    if word == "include":
        raise PayloadError(number, "include", "includes are only allowed in the header")
    if word == "OPENQASM":
        raise PayloadError(number, "header", "the version line may only come first")
    if word in _OTHER_STATEMENTS:
        raise PayloadError(number, "statement", f"{word!r} statements are not allowed")
    if word == "measure" or "measure" in line or "=" in line or "->" in line:
        return _check_measurement(number, line, qubits, clbits)
    if head is None:
        raise PayloadError(number, "statement", "not a gate application or measurement")
    return _check_gate(number, line, qubits)


#: Statements up to this long have their verdict remembered (a canonical line is under 30
#: characters); longer ones, which no emitter writes, are checked every time.
_REMEMBERED_LINE_LENGTH = 80


@lru_cache(maxsize=8192)
def _checked_statement(line: str, qubits: int, clbits: int) -> str | tuple[int, int]:
    """:func:`_classify_and_check` of a line (a pure function of its arguments), remembered.

    A program repeats most of its lines (``sx q[3];``, ``cx q[0], q[1];``) and so do the jobs
    of a worker; only the angles vary. A refusal is not remembered (an exception is never
    cached) and carries line 0, which the caller replaces.
    """
    return _classify_and_check(0, line, qubits, clbits)


class _Measurements:
    """The closing block of measurements: ``c[0]``, ``c[1]``... in order, distinct qubits."""

    def __init__(self, clbits: int) -> None:
        self.clbits = clbits
        self.qubits: set[int] = set()

    @property
    def started(self) -> bool:
        return bool(self.qubits)

    def add(self, number: int, clbit: int, qubit: int) -> None:
        expected = len(self.qubits)
        if clbit != expected:
            raise PayloadError(
                number, "measure", f"bits must be measured once each, in order: expected c[{expected}]"
            )
        if qubit in self.qubits:
            raise PayloadError(number, "measure", f"qubit {qubit} is measured twice")
        self.qubits.add(qubit)

    def close(self, number: int) -> None:
        if len(self.qubits) != self.clbits:
            raise PayloadError(
                number,
                "measure",
                f"every bit must be measured once: {len(self.qubits)} of bit[{self.clbits}] are",
            )


def validate_program(
    text: str,
    *,
    max_qubits: int = 1024,
    max_bytes: int = 1_000_000,
    max_bits: int | None = None,
    max_reps: int = MAX_REPS,
) -> ProgramFacts:
    """Check that ``text`` is exactly canonical OpenQASM 3 as our emitter writes it.

    Args:
        text: The program that is about to leave the trusted zone.
        max_qubits: Largest ``qubit[N]`` accepted.
        max_bytes: Largest program size, in bytes.
        max_bits: Largest ``bit[M]`` (the measured width) accepted; ``max_qubits`` if ``None``.
        max_reps: QAOA depth the gate bound is taken at (:func:`gate_bound`).

    Returns:
        The registers' sizes and the gates and measurements used.

    Raises:
        PayloadError: At the first line that breaks the contract, with the rule it breaks.
    """
    if not isinstance(text, str):
        raise PayloadError(0, "submission", f"the program must be text, not {type(text).__name__}")
    if len(text) > max_bytes:  # every accepted character is one byte
        raise PayloadError(0, "size", f"the program has more than {max_bytes} bytes")
    _check_characters(text)
    if not text:
        raise PayloadError(1, "layout", "the program is empty")
    if not text.endswith("\n"):
        raise PayloadError(text.count("\n") + 1, "layout", "the program must end with a newline")
    lines = text[:-1].split("\n")
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            raise PayloadError(number, "layout", "blank lines are not allowed")
        if line != stripped:
            raise PayloadError(number, "layout", "leading or trailing spaces are not allowed")
    qubits, clbits = _check_header(lines, max_qubits)
    if clbits > qubits:
        raise PayloadError(4, "register", f"bit[{clbits}] measures more bits than qubit[{qubits}] has")
    widest = max_qubits if max_bits is None else max_bits
    if clbits > widest:
        raise PayloadError(4, "size", f"bit[{clbits}] is more than the {widest} measured qubits allowed")
    most_gates = gate_bound(clbits, max_reps)
    gates: Counter[str] = Counter()
    applied = 0  # gates.total(), kept as it grows (summing the counter per line cost more)
    measured = _Measurements(clbits)
    for number, line in enumerate(lines[4:], start=5):
        if len(line) <= _REMEMBERED_LINE_LENGTH:
            try:
                found = _checked_statement(line, qubits, clbits)
            except PayloadError as error:
                raise PayloadError(number, error.rule, error.detail) from None
        else:
            found = _classify_and_check(number, line, qubits, clbits)
        if isinstance(found, tuple):
            measured.add(number, *found)
            continue
        if measured.started:
            raise PayloadError(number, "measure", "no gate may follow the measurements")
        gates[found] += 1
        applied += 1
        if applied > most_gates:
            raise PayloadError(
                number,
                "gates",
                f"more than {most_gates} gates: the bound for {clbits} measured qubits at p <= {max_reps}",
            )
    measured.close(len(lines))
    return ProgramFacts(
        qubits=qubits, clbits=clbits, gate_counts=dict(gates), measurements=len(measured.qubits)
    )


@dataclass(frozen=True)
class SubmissionPolicy:
    """What a submission to one provider must be, beyond the program grammar.

    Attributes:
        device: The one device name submissions may name (the operator's setting); any if ``None``.
        tokens: The gateway's token minter: only tokens it minted pass. Any 32-hex token if ``None``
            (tests of the grammar alone).
        max_shots: Largest shot count.
        max_qubits: Largest ``qubit[N]``.
        max_bits: Largest measured width.
        max_program_bytes: Largest program.
    """

    device: str | None = None
    tokens: TokenMinter | None = None
    max_shots: int = 100_000
    max_qubits: int = 1024
    max_bits: int | None = None
    max_program_bytes: int = 1_000_000


def check_token(token: object, tokens: TokenMinter | None) -> str:
    """A client token as the boundary accepts it: 32 lowercase hex digits, minted by the gateway.

    Raises:
        PayloadError: Rule ``submission`` otherwise.
    """
    if not isinstance(token, str) or _TOKEN.fullmatch(token) is None:
        raise PayloadError(0, "submission", "client_token must be 32 lowercase hex digits")
    if tokens is not None and not tokens.is_minted(token):
        raise PayloadError(0, "submission", "client_token was not minted by the gateway")
    return token


def validate_submission(body: Mapping[str, object], policy: SubmissionPolicy | None = None) -> ProgramFacts:
    """Check a ``POST /v1/tasks`` body: exactly device, program, shots and client token.

    Args:
        body: The JSON object about to be sent.
        policy: Device, token minter and limits; :class:`SubmissionPolicy` defaults if ``None``.

    Returns:
        The facts of the program (registers, gate counts, measurements).

    Raises:
        PayloadError: On a missing or extra key, a value of the wrong type or out of range, another
            device, a token the gateway did not mint, or a program :func:`validate_program` refuses.
    """
    rules = policy or SubmissionPolicy()
    if not isinstance(body, Mapping):
        raise PayloadError(0, "submission", f"the task body must be an object, not {type(body).__name__}")
    keys = set(body)
    if keys != SUBMISSION_KEYS:
        missing = sorted(SUBMISSION_KEYS - keys)
        extra = sorted(repr(key) for key in keys - SUBMISSION_KEYS)
        raise PayloadError(0, "submission", f"task body keys: missing {missing}, not allowed {extra}")
    device = body["device"]
    if not isinstance(device, str) or _DEVICE.fullmatch(device) is None:
        raise PayloadError(0, "submission", "device must be a name of 1-64 characters [A-Za-z0-9_.:-]")
    if rules.device is not None and device != rules.device:
        raise PayloadError(0, "submission", f"device must be the configured {rules.device!r}")
    shots = body["shots"]
    # bool is an int subclass; True shots is a bug, not a count.
    if not isinstance(shots, int) or isinstance(shots, bool) or not 1 <= shots <= rules.max_shots:
        raise PayloadError(0, "submission", f"shots must be an integer from 1 to {rules.max_shots}")
    check_token(body["client_token"], rules.tokens)
    program = body["program"]
    if not isinstance(program, str):
        raise PayloadError(0, "submission", "program must be text")
    return validate_program(
        program,
        max_qubits=rules.max_qubits,
        max_bits=rules.max_bits,
        max_bytes=rules.max_program_bytes,
    )
