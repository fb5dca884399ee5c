"""Python overhead cut from a job's compile and refine steps, before and after, in one run.

A job's compile step builds the circuit, transpiles it (the cached level-3 pass manager for the
all-to-all emulated device) and exports it as OpenQASM 3. Two of its parts were Python overhead
around Qiskit and were cut (2026-12-07); this compares them side by side, interleaved circuit by
circuit so that both sides see the same load, timed with this thread's CPU
(``time.thread_time``):

1. **The circuit's build**: Qiskit's public gate methods (``QuantumCircuit.cx``, ``.ry``, ...;
   before) beside the fast path of ``quantum/circuit.py``'s ``_Gates`` (now). Same circuit or not.
2. **The OpenQASM export**: the export as it was (it built every gate's Python object to check it
   is the standard gate; kept below, verbatim but for names) beside ``to_openqasm3`` now (a gate
   Qiskit stores natively is read from its record). Same text or not.
3. **Refine's local searches**: every judged candidate searched on its own (before) beside one
   search memo shared by all of a job's candidates (now), on jobs run through the compile step,
   sampled on Qiskit Aer (512 shots) and judged. Same local optima or not, and the evaluations.
4. **The transpiled circuit's metrics** (depth, gate counts; ``circuit_metrics``): wire numbers
   looked up per instruction (before, kept below) beside once per operand tuple (now). Same
   metrics or not.

    .venv/bin/python -m benchmarks.step_overhead [--instances 30] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from typing import Any

from qiskit import QuantumCircuit
from qiskit.circuit import Measure

from benchmarks.report import machine, markdown_table
from benchmarks.worker_profile import small_request
from qhybrid.core.config import Settings
from qhybrid.domain.device import DeviceTarget
from qhybrid.domain.request import JobRequest
from qhybrid.jobs import pipeline
from qhybrid.quantum import circuit as circuit_module
from qhybrid.quantum.circuit import CircuitMetrics, circuit_metrics, transpile_for
from qhybrid.quantum.engine import build_circuit
from qhybrid.quantum.qasm import _check_gate, _literal, to_openqasm3

EMULATOR = DeviceTarget(
    name="emulator", num_qubits=32, basis_gates=("rz", "sx", "x", "cx"), provider="emulated-cloud"
)


def old_to_openqasm3(circuit: QuantumCircuit) -> str:
    """The export of commit f304f4e, verbatim but for names: for the comparison only."""
    if circuit.num_qubits < 1 or circuit.num_clbits < 1:
        raise ValueError("the circuit needs at least one qubit and one classical bit")
    lines = [
        "OPENQASM 3.0;",
        'include "stdgates.inc";',
        f"qubit[{circuit.num_qubits}] q;",
        f"bit[{circuit.num_clbits}] c;",
    ]
    measured: dict[int, int] = {}
    qubit_index = {qubit: i for i, qubit in enumerate(circuit.qubits)}
    clbit_index = {clbit: i for i, clbit in enumerate(circuit.clbits)}
    for instruction in circuit.data:
        operation = instruction.operation
        name = operation.name
        if name == "barrier":
            continue
        qubits = [qubit_index[qubit] for qubit in instruction.qubits]
        if name == "measure":
            if operation.base_class is not Measure or len(qubits) != 1 or len(instruction.clbits) != 1:
                raise ValueError("instruction 'measure' is not the standard measurement")
            clbit = clbit_index[instruction.clbits[0]]
            if clbit in measured or qubits[0] in measured.values():
                raise ValueError(f"classical bit {clbit} or qubit {qubits[0]} is measured twice")
            measured[clbit] = qubits[0]
            continue
        if set(qubits) & set(measured.values()):
            raise ValueError(f"gate {name!r} acts on a qubit after its measurement")
        _check_gate(operation, len(instruction.clbits))
        operands = ", ".join(f"q[{index}]" for index in qubits)
        if operation.params:
            parameters = ",".join(_literal(parameter, name) for parameter in operation.params)
            lines.append(f"{name}({parameters}) {operands};")
        else:
            lines.append(f"{name} {operands};")
    if sorted(measured) != list(range(circuit.num_clbits)):
        raise ValueError("every classical bit must be measured exactly once")
    lines.extend(f"c[{clbit}] = measure q[{measured[clbit]}];" for clbit in range(circuit.num_clbits))
    return "\n".join(lines) + "\n"


def old_circuit_metrics(logical_qubits: int, circuit: QuantumCircuit) -> CircuitMetrics:
    """``circuit_metrics`` as it was before 2026-12-07 (leancpu3), verbatim but for names.

    Measure a (transpiled) circuit.

    Args:
        logical_qubits: Qubits of the circuit before transpilation.
        circuit: The circuit to measure.
    """
    # One pass over the instructions, reading only their names and bits (building each gate's
    # Python object, as instruction.operation and QuantumCircuit.depth do, cost more than the rest).
    qubit_index = {qubit: i for i, qubit in enumerate(circuit.qubits)}
    clbit_index = {clbit: len(qubit_index) + i for i, clbit in enumerate(circuit.clbits)}
    # The depth as QuantumCircuit.depth() counts it: every instruction but a directive (barrier)
    # is one layer on all its qubits and bits; a directive lines them up without a layer.
    levels = [0] * (len(qubit_index) + len(clbit_index))
    touched: set[int] = set()
    two_qubit = 0
    total = 0
    for instruction in circuit.data:
        qubits = [qubit_index[qubit] for qubit in instruction.qubits]
        wires = qubits + [clbit_index[clbit] for clbit in instruction.clbits]
        if wires:
            level = max(levels[wire] for wire in wires) + (0 if instruction.is_directive() else 1)
            for wire in wires:
                levels[wire] = level
        name = instruction.name
        if name == "barrier":
            continue
        touched.update(qubits)
        if name in circuit_module._NON_GATES:
            continue
        total += 1
        if len(qubits) == 2:
            two_qubit += 1
    return CircuitMetrics(
        logical_qubits=logical_qubits,
        physical_qubits=len(touched),
        depth=max(levels, default=0),
        two_qubit_gates=two_qubit,
        total_gates=total,
    )


def _public_build(ising: Any, plan: Any) -> QuantumCircuit:
    """``build_circuit`` with Qiskit's public gate methods (the fast path switched off)."""
    native = circuit_module._NATIVE
    circuit_module._NATIVE = {}
    try:
        return build_circuit(ising, plan)
    finally:
        circuit_module._NATIVE = native


def _cpu_ms(function: Any, *args: Any, repeats: int) -> tuple[Any, float]:
    started = time.thread_time()
    for _ in range(repeats):
        out = function(*args)
    return out, 1000 * (time.thread_time() - started) / repeats


def compile_table(instances: int, repeats: int) -> list[dict[str, Any]]:
    """Per mixer: build and export, before and now, on the same job circuits."""
    settings = Settings()
    rows = []
    for mixer in ("xy-warm", "x-warm", "x", "xy"):
        cpu: dict[str, list[float]] = {
            f"{part}{side}": [] for part in ("build", "export", "metrics") for side in (0, 1)
        }
        same_circuit = same_text = same_metrics = 0
        for index in range(instances):
            body = small_request((4, 6, 8)[index % 3], 300 + index)
            body["options"].update({"mixer": mixer, "reps": 1 + index % 2})
            request = JobRequest.model_validate(body)
            formulation = pipeline.formulate(request, pipeline.estimate(request))
            spec = pipeline.qaoa_spec(request, formulation, settings)
            hidden = pipeline.obfuscate(formulation, spec, pipeline.privacy_level(request, settings))
            plan = pipeline.plan(hidden, spec, index)
            ising = hidden.sent.ising
            order = (0, 1) if index % 2 == 0 else (1, 0)
            built: dict[int, QuantumCircuit] = {}
            for side in order:
                built[side], ms = _cpu_ms(
                    _public_build if side == 0 else build_circuit, ising, plan, repeats=repeats
                )
                cpu[f"build{side}"].append(ms)
            same_circuit += built[0] == built[1] and list(built[0].data) == list(built[1].data)
            transpiled = transpile_for(built[1], EMULATOR, seed=index)[0]
            texts: dict[int, str] = {}
            for side in order:
                texts[side], ms = _cpu_ms(
                    old_to_openqasm3 if side == 0 else to_openqasm3, transpiled, repeats=repeats
                )
                cpu[f"export{side}"].append(ms)
            same_text += texts[0] == texts[1]
            measured: dict[int, CircuitMetrics] = {}
            for side in order:
                measured[side], ms = _cpu_ms(
                    old_circuit_metrics if side == 0 else circuit_metrics,
                    ising.num_qubits,
                    transpiled,
                    repeats=repeats,
                )
                cpu[f"metrics{side}"].append(ms)
            same_metrics += measured[0] == measured[1]
        names = {"build": "circuit build", "export": "OpenQASM export", "metrics": "circuit metrics"}
        for part, same in (("build", same_circuit), ("export", same_text), ("metrics", same_metrics)):
            before, now = statistics.fmean(cpu[f"{part}0"]), statistics.fmean(cpu[f"{part}1"])
            rows.append(
                {
                    "mixer": mixer,
                    "part": names[part],
                    "same result": f"{same}/{instances}",
                    "CPU ms before (mean)": f"{before:.3f}",
                    "CPU ms now (mean)": f"{now:.3f}",
                    "now / before": f"{now / before:.2f}" if before > 0 and math.isfinite(now) else "",
                }
            )
    return rows


def transpile_pool_table(instances: int, rounds: int) -> list[dict[str, Any]]:
    """The level-3 transpile of job circuits with Qiskit's Rust thread pool and without.

    The pool is switched by ``QISKIT_IN_PARALLEL`` (read by Qiskit at each pass), alternating
    which side goes first each round; CPU is the whole process's (the pool's threads included)
    and the thread's own. Same programs or not, on every circuit.
    """
    settings = Settings()
    circuits = []
    for index in range(instances):
        request = JobRequest.model_validate(small_request(6, 100 + index))
        formulation = pipeline.formulate(request, pipeline.estimate(request))
        spec = pipeline.qaoa_spec(request, formulation, settings)
        hidden = pipeline.obfuscate(formulation, spec, pipeline.privacy_level(request, settings))
        circuits.append(build_circuit(hidden.sent.ising, pipeline.plan(hidden, spec, index)))
    saved = os.environ.pop(circuit_module.QISKIT_SERIAL_VARIABLE, None)
    process: dict[str, list[float]] = {"pool": [], "calling thread": []}
    thread: dict[str, list[float]] = {"pool": [], "calling thread": []}
    programs: dict[str, list[str]] = {}
    try:
        for round_ in range(rounds):
            for side in ("pool", "calling thread") if round_ % 2 == 0 else ("calling thread", "pool"):
                if side == "pool":
                    os.environ.pop(circuit_module.QISKIT_SERIAL_VARIABLE, None)
                else:
                    os.environ[circuit_module.QISKIT_SERIAL_VARIABLE] = "TRUE"
                started, thread_started = time.process_time(), time.thread_time()
                texts = [to_openqasm3(transpile_for(c, EMULATOR, seed=i)[0]) for i, c in enumerate(circuits)]
                process[side].append(1000 * (time.process_time() - started) / instances)
                thread[side].append(1000 * (time.thread_time() - thread_started) / instances)
                programs.setdefault(side, texts)
    finally:
        os.environ.pop(circuit_module.QISKIT_SERIAL_VARIABLE, None)
        if saved is not None:
            os.environ[circuit_module.QISKIT_SERIAL_VARIABLE] = saved
    same = sum(a == b for a, b in zip(programs["pool"], programs["calling thread"], strict=True))
    return [
        {
            "transpile (level 3, all-to-all) + export": side,
            "same programs": f"{same}/{instances}",
            "process CPU ms per circuit (median of rounds)": f"{statistics.median(process[side]):.2f}",
            "thread CPU ms per circuit": f"{statistics.median(thread[side]):.2f}",
        }
        for side in ("pool", "calling thread")
    ]


def cloud_parse_table(instances: int, rounds: int) -> list[dict[str, Any]]:
    """The emulated cloud's parse of job programs: Qiskit's native importer and the canonical reader.

    Programs are those PREPARING makes for 6-asset jobs (the emulator's basis); each round parses
    all of them on one side then the other, alternating which goes first; thread CPU (both run on
    the calling thread). Same circuit or not: registers, instructions, phase, metadata.
    """
    from qhybrid.cloud import sampler  # the public zone's code, measured from here as a library

    settings = Settings()
    programs = [
        pipeline.prepare(
            JobRequest.model_validate(small_request(6, 100 + index)), EMULATOR, seed=index, settings=settings
        ).program.text
        for index in range(instances)
    ]
    same = 0
    for program in programs:
        canonical, native = sampler._load_canonical(program), sampler._load_native(program)
        same += (
            canonical is not None
            and native is not None
            and canonical == native
            and list(canonical.data) == list(native.data)
            and (canonical.qregs, canonical.cregs) == (native.qregs, native.cregs)
            and canonical.global_phase == native.global_phase
        )
    spent: dict[str, list[float]] = {"native importer": [], "canonical reader": []}
    readers = {"native importer": sampler._load_native, "canonical reader": sampler._load_canonical}
    for round_ in range(rounds):
        for side in list(readers) if round_ % 2 == 0 else list(readers)[::-1]:
            started = time.thread_time()
            for program in programs:
                readers[side](program)
            spent[side].append(1000 * (time.thread_time() - started) / instances)
    return [
        {
            "cloud: parse a job's program": side,
            "same circuit": f"{same}/{instances}",
            "thread CPU ms per program (median of rounds)": f"{statistics.median(spent[side]):.3f}",
            "lines per program (mean)": f"{statistics.fmean(p.count(chr(10)) for p in programs):.0f}",
        }
        for side in readers
    ]


def refine_table(instances: int, repeats: int) -> list[dict[str, Any]]:
    """Local searches of every judged candidate, alone and with one shared memo, per size."""
    from qiskit import qasm3
    from qiskit_aer import AerSimulator

    settings = Settings()
    simulator = AerSimulator()
    rows = []
    for assets in (4, 6, 8):
        cpu: dict[str, list[float]] = {"alone": [], "memo": []}
        same = candidates = visited = 0
        for index in range(instances):
            request = JobRequest.model_validate(small_request(assets, 500 + index))
            prepared = pipeline.prepare(request, EMULATOR, seed=index, settings=settings)
            formulation = pipeline.formulate(request, prepared.moments)
            counts = (
                simulator.run(qasm3.loads(prepared.program.text), shots=512, seed_simulator=index)
                .result()
                .get_counts()
            )
            judged = pipeline.judge(formulation, pipeline.deobfuscate(counts, prepared.key))
            results: dict[str, list[Any]] = {}
            states = 0
            for side in ("alone", "memo") if index % 2 == 0 else ("memo", "alone"):
                started = time.thread_time()
                for _ in range(repeats):
                    memo: dict[bytes, Any] | None = {} if side == "memo" else None
                    results[side] = [formulation.local_search(bits, memo) for bits in judged.repaired]
                    states = len(memo) if memo is not None else states
                cpu[side].append(1000 * (time.thread_time() - started) / repeats)
            same += sum(bool((a == b).all()) for a, b in zip(results["alone"], results["memo"], strict=True))
            candidates += len(judged.repaired)
            visited += states
        rows.append(
            {
                "assets": assets,
                "jobs": instances,
                "candidates per job": f"{candidates / instances:.1f}",
                "states searched per job, with the memo": f"{visited / instances:.1f}",
                "same local optimum": f"{same}/{candidates}",
                "CPU ms alone (mean)": f"{statistics.fmean(cpu['alone']):.3f}",
                "CPU ms with the memo (mean)": f"{statistics.fmean(cpu['memo']):.3f}",
            }
        )
    return rows


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--transpile-pool", action="store_true", help="only the transpile, with and without Qiskit's pool"
    )
    parser.add_argument("--cloud-parse", action="store_true", help="only the cloud's parse of job programs")
    args = parser.parse_args()
    if args.cloud_parse:
        print(f"# {machine()}; load average {os.getloadavg()[0]:.2f} before", flush=True)
        rows = cloud_parse_table(args.instances, 2 * args.repeats)
        print(f"# load average {os.getloadavg()[0]:.2f} after")
        print("\n".join(markdown_table(rows)))
        return
    if args.transpile_pool:
        print(f"# {machine()}; load average {os.getloadavg()[0]:.2f} before", flush=True)
        rows = transpile_pool_table(args.instances, 2 * args.repeats)
        print(f"# load average {os.getloadavg()[0]:.2f} after")
        print("\n".join(markdown_table(rows)))
        return
    print(f"# {machine()}; load average {os.getloadavg()[0]:.2f} before", flush=True)
    rows = compile_table(args.instances, args.repeats)
    print(f"# load average {os.getloadavg()[0]:.2f} after; thread CPU, interleaved per circuit")
    print("\n".join(markdown_table(rows)))
    print(f"\n# refine's local searches; load average {os.getloadavg()[0]:.2f} before")
    print("\n".join(markdown_table(refine_table(args.instances, args.repeats))))
    print(f"# load average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
