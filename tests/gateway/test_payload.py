"""The boundary payload contract: canonical programs pass, everything else is refused by rule."""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit.library import get_standard_gate_name_mapping

from qhybrid.domain.device import DeviceTarget
from qhybrid.domain.request import SolverOptions
from qhybrid.gateway.payload import (
    GATE_SIGNATURES,
    MAX_REPS,
    PayloadError,
    ProgramFacts,
    SubmissionPolicy,
    gate_bound,
    validate_program,
    validate_submission,
)
from qhybrid.gateway.tokens import TokenMinter
from qhybrid.quantum.angles import QaoaAngles
from qhybrid.quantum.circuit import qaoa_circuit, transpile_for
from qhybrid.quantum.qasm import ALLOWED_GATES, to_openqasm3
from tests.quantum.test_simulator import random_ising

HEADER = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit[3] c;\n'
MEASURE_ALL = ("c[0] = measure q[0];", "c[1] = measure q[1];", "c[2] = measure q[2];")
GOOD = HEADER + "h q[0];\nrz(-0.5) q[1];\ncp(1e-05) q[0], q[2];\n" + "".join(f"{m}\n" for m in MEASURE_ALL)


def program(*statements: str, header: str = HEADER) -> str:
    return header + "".join(f"{statement}\n" for statement in statements)


def refused(text: str, **limits: int) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        validate_program(text, **limits)
    return caught.value


# --- what passes ---------------------------------------------------------------------------------


def test_signatures_match_qiskit_standard_gates() -> None:
    assert set(GATE_SIGNATURES) == set(ALLOWED_GATES)
    standard = get_standard_gate_name_mapping()
    for name, (qubits, parameters) in GATE_SIGNATURES.items():
        assert (standard[name].num_qubits, len(standard[name].params)) == (qubits, parameters), name


def test_small_program_facts() -> None:
    assert validate_program(GOOD) == ProgramFacts(
        qubits=3, clbits=3, gate_counts={"h": 1, "rz": 1, "cp": 1}, measurements=3
    )


@pytest.mark.parametrize(("n", "reps", "seed"), [(4, 1, 1), (6, 2, 2), (8, 3, 3)])
def test_logical_qaoa_programs_pass(n: int, reps: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    angles = QaoaAngles(
        gammas=tuple(float(g) for g in rng.uniform(-1, 1, size=reps)),
        betas=tuple(float(b) for b in rng.uniform(-1, 1, size=reps)),
        expectation=0.0,
        evaluations=0,
    )
    circuit = qaoa_circuit(random_ising(n, seed=seed, density=0.7), angles)
    # The logical circuit may use gates outside the allowed set (rzz...): decompose as the
    # transpiler would for an all-to-all device with the emitter's gate set.
    device = DeviceTarget("all", n, ("rz", "sx", "x", "cx", "h", "cp", "rx", "ry"), None)
    transpiled, _ = transpile_for(circuit, device, seed=seed)
    facts = validate_program(to_openqasm3(transpiled))
    assert facts.qubits == n
    assert facts.clbits == n
    assert facts.measurements == n
    assert sum(facts.gate_counts.values()) > n


def test_transpiled_qaoa_on_a_line_passes() -> None:
    angles = QaoaAngles(gammas=(0.4,), betas=(-0.3,), expectation=0.0, evaluations=0)
    line = tuple((i, i + 1) for i in range(6)) + tuple((i + 1, i) for i in range(6))
    device = DeviceTarget("line7", 7, ("rz", "sx", "x", "cx"), line)
    transpiled, _ = transpile_for(qaoa_circuit(random_ising(5, seed=4), angles), device, seed=1)
    facts = validate_program(to_openqasm3(transpiled))
    assert (facts.qubits, facts.clbits, facts.measurements) == (7, 5, 5)
    assert set(facts.gate_counts) <= {"rz", "sx", "x", "cx"}


def test_every_allowed_gate_with_awkward_literals_passes() -> None:
    circuit = QuantumCircuit(3, 3)
    # The emitter puts each of them on the grid: reduced to [-pi, pi], rounded to 1e-6 rad.
    values = iter([0.5, -1e-05, 1.5e20, -0.0, 3.0, 123456.789, 2.2250738585072014e-308])
    for name, (qubits, parameters) in sorted(GATE_SIGNATURES.items()):
        args = [next(values, 0.25) for _ in range(parameters)]
        getattr(circuit, name)(*args, *range(qubits))
    circuit.measure([0, 1, 2], [0, 1, 2])
    facts = validate_program(to_openqasm3(circuit))
    assert facts.gate_counts == dict.fromkeys(GATE_SIGNATURES, 1)


# --- what is refused -----------------------------------------------------------------------------

MALFORMED: list[tuple[str, str, int, str]] = [
    # (id, program, line, rule)
    ("comment-line", program("// hello", "h q[0];"), 5, "comment"),
    ("comment-trailing", program("h q[0]; // data"), 5, "comment"),
    ("comment-block", program("/* data */ h q[0];"), 5, "comment"),
    ("string", program('h q[0]; "secret"'), 5, "string"),
    ("pi", program("rz(pi) q[0];"), 5, "literal"),
    ("pi-expression", program("rz(pi/2) q[0];"), 5, "literal"),
    ("expression", program("rz(0.5*2.0) q[0];"), 5, "literal"),
    ("identifier", program("rz(theta) q[0];"), 5, "literal"),
    ("plus-sign", program("rz(+0.5) q[0];"), 5, "literal"),
    ("underscore-digits", program("rz(1_000.0) q[0];"), 5, "literal"),
    ("padded-digits", program("rz(0.50000) q[0];"), 5, "literal"),
    ("integer-literal", program("rz(3) q[0];"), 5, "literal"),
    ("nested-parens", program("rz((0.5)) q[0];"), 5, "literal"),
    ("nan", program("rz(nan) q[0];"), 5, "non-finite"),
    ("inf", program("rz(-inf) q[0];"), 5, "non-finite"),
    ("overflow", program("rz(1e+999) q[0];"), 5, "non-finite"),
    ("exponent-without-sign", program("rz(1e5) q[0];"), 5, "literal"),
    ("unknown-gate", program("rzz(0.5) q[0], q[1];"), 5, "gate"),
    ("u3-gate", program("u3(0.1,0.2,0.3) q[0];"), 5, "gate"),
    ("modifier", program("ctrl @ x q[0], q[1];"), 5, "gate"),
    ("arity-too-many", program("h q[0], q[1];"), 5, "arity"),
    ("arity-too-few", program("cx q[0];"), 5, "arity"),
    ("missing-parameter", program("rz q[0];"), 5, "parameters"),
    ("extra-parameter", program("rz(0.1,0.2) q[0];"), 5, "parameters"),
    ("parameter-on-fixed-gate", program("h(0.5) q[0];"), 5, "parameters"),
    ("index-out-of-range", program("h q[3];"), 5, "index"),
    ("leading-zero-index", program("h q[01];"), 5, "operand"),
    ("same-qubit-twice", program("cx q[1], q[1];"), 5, "index"),
    ("broadcast", program("h q;"), 5, "operand"),
    ("operand-other-register", program("h r[0];"), 5, "register"),
    (
        "qubit-register-renamed",
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] data;\nbit[3] c;\n',
        3,
        "register",
    ),
    (
        "bit-register-renamed",
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit[3] out;\n',
        4,
        "register",
    ),
    ("bit-without-size", 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit c;\n', 4, "register"),
    ("empty-register", 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[0] q;\nbit[3] c;\n', 3, "register"),
    ("huge-qubit-count", 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[100000] q;\nbit[3] c;\n', 3, "size"),
    ("extra-declaration", program("bit[8] leak;"), 5, "declaration"),
    ("extra-qubit-declaration", program("qubit[1] r;"), 5, "declaration"),
    ("int-declaration", program("int x = 5;"), 5, "declaration"),
    ("second-include", program('include "stdgates.inc";'), 5, "string"),
    ("other-include", 'OPENQASM 3.0;\ninclude "evil.inc";\nqubit[3] q;\nbit[3] c;\n', 2, "include"),
    ("missing-header", "qubit[3] q;\nbit[3] c;\nh q[0];\n", 1, "header"),
    ("missing-include", "OPENQASM 3.0;\nqubit[3] q;\nbit[3] c;\nh q[0];\n", 2, "header"),
    ("old-version", 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[3];\n', 1, "header"),
    ("version-with-space", GOOD.replace("OPENQASM 3.0;", "OPENQASM  3.0;"), 1, "header"),
    ("gate-definition", program("gate g a { h a; }"), 5, "definition"),
    ("def-subroutine", program("def f(qubit a) { h a; }"), 5, "definition"),
    ("classical-if", program("if (c[0]) x q[1];"), 5, "control"),
    ("while", program("while (true) { h q[0]; }"), 5, "control"),
    ("reset", program("reset q[0];"), 5, "statement"),
    ("barrier", program("barrier q[0], q[1];"), 5, "statement"),
    ("pragma", program("#pragma leak"), 5, "statement"),
    ("annotation", program("@leak h q[0];"), 5, "gate"),
    ("measure-register", program("c = measure q;"), 5, "measure"),
    ("measure-arrow", program("measure q[0] -> c[0];"), 5, "measure"),
    ("measure-bit-out-of-range", program("c[3] = measure q[0];"), 5, "index"),
    ("measure-qubit-out-of-range", program("c[0] = measure q[9];"), 5, "index"),
    ("measure-extra-space", program("c[0] =  measure q[0];"), 5, "measure"),
    ("classical-assignment", program("c[0] = 1;"), 5, "measure"),
    # The channel's bounds: the grid, the measurements' order.
    ("long-literal", program("rz(0.1234567891) q[0];"), 5, "literal"),
    ("seventeen-digits", program("rz(0.30000000000000004) q[0];"), 5, "literal"),
    ("off-grid-tiny", program("rz(1.5e-07) q[0];"), 5, "literal"),
    ("grid-point-other-spelling", program("rz(1.0e-06) q[0];"), 5, "literal"),
    ("huge-angle", program("rz(1e+308) q[0];"), 5, "angle"),
    ("beyond-pi", program("rz(3.141594) q[0];"), 5, "angle"),
    ("measure-twice", program("c[0] = measure q[0];", "c[1] = measure q[0];"), 6, "measure"),
    ("measure-out-of-order", program("c[1] = measure q[1];"), 5, "measure"),
    ("gate-after-measure", program("c[0] = measure q[0];", "h q[1];"), 6, "measure"),
    ("unmeasured-bits", program("h q[0];", "c[0] = measure q[0];"), 6, "measure"),
    ("nothing-measured", program("h q[0];"), 5, "measure"),
    (
        "more-bits-than-qubits",
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit[4] c;\n',
        4,
        "register",
    ),
    ("missing-semicolon", program("h q[0]"), 5, "statement"),
    ("double-space", program("h  q[0];"), 5, "statement"),
    ("no-space-after-comma", program("cx q[0],q[1];"), 5, "operand"),
    ("two-statements-one-line", program("h q[0]; h q[1];"), 5, "operand"),
    ("non-ascii", program("rz(0.5) q[0];", "h q[0]; é"), 6, "encoding"),
    ("non-ascii-lookalike", program("h q[0];").replace("h q", "\u04bb q"), 5, "encoding"),
    ("tab", program("h\tq[0];"), 5, "encoding"),
    ("nul", program("h q[0];\x00"), 5, "encoding"),
    ("crlf", GOOD.replace("\n", "\r\n"), 1, "encoding"),
    ("lone-cr-hiding-a-statement", program("h q[0];\rx q[1];"), 5, "encoding"),
    ("blank-line", program("h q[0];", "", "x q[1];"), 6, "layout"),
    ("trailing-blank-line", GOOD + "\n", 11, "layout"),
    ("whitespace-line", program("h q[0];", "   "), 6, "layout"),
    ("leading-space", program(" h q[0];"), 5, "layout"),
    ("no-final-newline", GOOD[:-1], 10, "layout"),
    ("empty", "", 1, "layout"),
]


@pytest.mark.parametrize(("text", "line", "rule"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_programs_are_refused_with_their_rule(text: str, line: int, rule: str) -> None:
    error = refused(text)
    assert (error.line, error.rule) == (line, rule), str(error)
    assert str(error).startswith(f"line {line}: {rule}: ")
    assert isinstance(error, ValueError)


def test_size_limits() -> None:
    assert refused(GOOD, max_bytes=len(GOOD) - 1).rule == "size"
    assert validate_program(GOOD, max_bytes=len(GOOD)).qubits == 3
    error = refused(GOOD, max_qubits=2)
    assert (error.line, error.rule) == (3, "size")
    many_bits = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[5000] q;\nbit[5000] c;\n'
    assert refused(many_bits).rule == "size"
    error = refused(GOOD, max_bits=2)
    assert (error.line, error.rule) == (4, "size")


def test_the_issues_smuggling_program_is_refused() -> None:
    """78 bytes of text packed into 13 ``rz`` angles, as the issue did, do not pass the grid."""
    secret = b"ACME Pension Fund: AAPL 1200000, XOM 800000, JNJ 650000, client #4471 (Q3 2026)"[:78]
    angles = []
    for start in range(0, len(secret), 6):
        chunk = secret[start : start + 6]
        # Six bytes as 15 decimal digits of a float in (0, 1): what a free literal carries.
        angles.append(float("0." + str(int.from_bytes(chunk, "big")).zfill(15)))
    assert len(angles) == 13
    smuggling = program(*(f"rz({angle!r}) q[{k % 3}];" for k, angle in enumerate(angles)), *MEASURE_ALL)
    error = refused(smuggling)
    assert (error.line, error.rule) == (5, "literal")
    # Rounded to the grid, as the emitter writes angles, the bytes are gone.
    circuit = QuantumCircuit(3, 3)
    for k, angle in enumerate(angles):
        circuit.rz(angle, k % 3)
    circuit.measure([0, 1, 2], [0, 1, 2])
    text = to_openqasm3(circuit)
    validate_program(text)
    sent = [float(line[3 : line.index(")")]) for line in text.splitlines() if line.startswith("rz(")]
    decoded = b"".join(int(f"{a:.15f}"[2:]).to_bytes(6, "big", signed=False) for a in sent if a > 0)
    assert secret not in decoded and secret[:6] not in decoded


def test_gate_count_is_bounded() -> None:
    header = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\n'
    bound = gate_bound(2)
    closing = "c[0] = measure q[0];\nc[1] = measure q[1];\n"
    assert validate_program(header + "x q[0];\n" * bound + closing).gate_counts == {"x": bound}
    error = refused(header + "x q[0];\n" * (bound + 1) + closing)
    assert (error.line, error.rule) == (5 + bound, "gates")
    # The issue's 120,000 gates on a small register: far beyond the bound.
    assert refused(header + "x q[0];\n" * 120_000 + closing, max_bytes=10**7).rule == "gates"


def test_max_reps_is_the_largest_depth_a_request_may_ask_for() -> None:
    limits = [m.le for m in SolverOptions.model_fields["reps"].metadata if hasattr(m, "le")]
    assert limits == [MAX_REPS]


@pytest.mark.parametrize("mixer", ["x", "x-warm", "xy", "xy-warm"])
@pytest.mark.parametrize(("n", "reps"), [(4, MAX_REPS), (10, 3), (16, 2)])
def test_transpiled_qaoa_circuits_stay_within_the_bound(mixer: str, n: int, reps: int) -> None:
    """The bound holds for every mixer's circuit, transpiled for a heavy-hex device and all-to-all."""
    from qhybrid.backends.ibm import fake_backend, ibm_target
    from qhybrid.quantum.engine import QaoaPlan, build_circuit
    from qhybrid.quantum.spec import QaoaSpec

    rng = np.random.default_rng(n * 10 + reps)
    ising = random_ising(n, seed=n, density=1.0)
    angles = QaoaAngles(
        gammas=tuple(float(g) for g in rng.uniform(-1, 1, reps)),
        betas=tuple(float(b) for b in rng.uniform(-1, 1, reps)),
        expectation=0.0,
        evaluations=0,
    )
    warm = tuple(float(w) for w in rng.uniform(0.1, 0.9, n)) if mixer in ("x-warm", "xy-warm") else None
    plan = QaoaPlan(QaoaSpec(mixer=mixer, reps=reps), angles, n // 2, warm, {})  # type: ignore[arg-type]
    circuit = build_circuit(ising, plan)
    targets = [
        ibm_target(fake_backend("FakeTorino")),
        DeviceTarget("all", 32, ("rz", "sx", "x", "cx"), None),
    ]
    for target in targets:
        transpiled, metrics = transpile_for(circuit, target, seed=reps)
        facts = validate_program(to_openqasm3(transpiled), max_qubits=200)
        assert sum(facts.gate_counts.values()) == metrics.total_gates
        # Not close to the bound either: the allowances are a factor of safety, not a guess.
        assert metrics.total_gates <= gate_bound(n) / 2, (target.name, metrics.total_gates, gate_bound(n))


# --- submissions ---------------------------------------------------------------------------------


def body(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "device": "emulator",
        "program": GOOD,
        "shots": 100,
        "client_token": secrets.token_hex(16),
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not ...}


def test_a_proper_submission_passes() -> None:
    facts = validate_submission(body())
    assert facts == validate_program(GOOD)
    assert (facts.qubits, facts.measurements) == (3, 3)
    assert validate_submission(body(device="ibm_torino", shots=100_000)) == facts


def test_a_submission_names_the_configured_device_and_a_minted_token() -> None:
    minter = TokenMinter(secrets.token_bytes(32))
    policy = SubmissionPolicy(device="emulator", tokens=minter, max_shots=1000)
    assert validate_submission(body(client_token=minter.mint()), policy).qubits == 3
    other_minter = TokenMinter(secrets.token_bytes(32))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"client_token": secrets.token_hex(16)}, "not minted"),
        ({"client_token": other_minter.mint()}, "not minted"),
        ({"client_token": minter.mint(), "device": "emulator2"}, "configured"),
        ({"client_token": minter.mint(), "shots": 1001}, "1 to 1000"),
    ]
    for changes, reason in cases:
        with pytest.raises(PayloadError, match=reason) as caught:
            validate_submission(body(**changes), policy)
        assert caught.value.rule == "submission"


@pytest.mark.parametrize(
    "changes",
    [
        {"note": "extra"},
        {"metadata": {"portfolio": "x"}},
        {"shots": ...},
        {"client_token": ...},
        {"shots": 0},
        {"shots": 100_001},
        {"shots": -5},
        {"shots": 10.0},
        {"shots": "100"},
        {"shots": True},
        {"client_token": "tok-" + "0" * 28},
        {"client_token": "A" * 32},
        {"client_token": "0" * 31},
        {"client_token": "0" * 32 + "\n"},
        {"client_token": 12345},
        {"device": ""},
        {"device": "emu lator"},
        {"device": "emulator/../../admin"},
        {"device": "x" * 65},
        {"device": None},
        {"program": b"OPENQASM 3.0;"},
    ],
    ids=repr,
)
def test_bad_submissions_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(PayloadError) as caught:
        validate_submission(body(**changes))
    assert caught.value.rule == "submission"
    assert caught.value.line == 0


def test_submission_program_is_checked() -> None:
    with pytest.raises(PayloadError) as caught:
        validate_submission(body(program=program("rz(pi) q[0];")))
    assert (caught.value.line, caught.value.rule) == (5, "literal")


def test_submission_must_be_a_mapping() -> None:
    with pytest.raises(PayloadError, match="object"):
        validate_submission(["device", "program"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("OPENQASM 3.0;\n", 2),
        ('OPENQASM 3.0;\ninclude "stdgates.inc";\n', 3),
        ('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\n', 4),
        ("OPENQASM 3.0;\nthis is not a program;\n", 2),
    ],
)
def test_incomplete_header_is_reported_at_the_first_missing_line(text: str, line: int) -> None:
    error = refused(text)
    assert (error.line, error.rule) == (line, "header")


def test_remembered_lines_keep_each_programs_verdict_and_line_numbers() -> None:
    from qhybrid.gateway import payload

    # A line accepted once is accepted again without being parsed again ...
    validate_program(GOOD)
    hits = payload._checked_statement.cache_info().hits
    validate_program(GOOD)
    assert payload._checked_statement.cache_info().hits >= hits + 6
    # ... but only for the same register sizes: q[2] is out of range in a 2-qubit program.
    small = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\n'
    error = refused(program("h q[0];", "cp(1e-05) q[0], q[2];", header=small))
    assert (error.line, error.rule) == (6, "index")
    # A refused line is refused every time, with the line it is on.
    assert refused(program("h q[0];", "foo q[0];")).line == 6
    assert refused(program("foo q[0];")).line == 5
    assert refused(program("h q[0];", "h q[1];", "foo q[0];")).rule == "gate"
    # Lines longer than any emitter writes are checked every time, never remembered.
    long = "rz(0." + "1" * 90 + ") q[1];"
    size = payload._checked_statement.cache_info().currsize
    assert refused(program("h q[0];", long)).rule == "literal"
    assert payload._checked_statement.cache_info().currsize == size
