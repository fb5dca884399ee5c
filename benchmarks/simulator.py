"""Our QAOA statevector simulators against Qiskit Aer and Braket's local simulator.

    .venv/bin/python -m benchmarks.simulator [--repeats 3] [--braket-timeout 900]

Part 1, X mixer, ``p = 2``, ``n = 16, 20, 24``, a dense random Ising problem (every pair
coupled, like a portfolio QUBO). The same evolution three ways, each timed from the problem to
the final statevector in memory, no sampling:

* ours: ``Ising.cost_vector()`` plus :class:`FullStateSimulator` (one BLAS thread, see
  :func:`single_threaded_blas`);
* Aer: ``AerSimulator(method="statevector")`` running :func:`qaoa_circuit` with
  ``save_statevector()`` (default settings: gate fusion on, all cores; and again limited to one
  thread, like ours); the circuit is transpiled for Aer once beforehand and that time is shown
  apart;
* Braket: ``LocalSimulator("braket_sv")`` on the equivalent Braket circuit (``h``, ``rz``, ``zz``,
  ``rx``) with a ``state_vector()`` result and ``shots=0``, run in a child process that is stopped
  after ``--braket-timeout`` seconds.

Each time is the median of ``--repeats`` runs (Braket: one run). The final probabilities are
compared with ours (Braket's qubit 0 is the most significant bit: reversed before comparing).

Part 2, XY mixer, ``B = n/2``, ``p = 2``: the weight-``B`` subspace simulator against the same
evolution on all ``2^n`` amplitudes (:func:`full_xy_statevector`), both from the Dicke state.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from braket.circuits import Circuit
from braket.devices import LocalSimulator
from qiskit import transpile
from qiskit_aer import AerSimulator

from qhybrid.domain.qubo import FloatArray, Ising
from qhybrid.quantum.angles import QaoaAngles
from qhybrid.quantum.circuit import qaoa_circuit
from qhybrid.quantum.objective import MeanObjective
from qhybrid.quantum.simulator import FullStateSimulator, probabilities_of, single_threaded_blas
from qhybrid.quantum.subspace import (
    SubspaceXYSimulator,
    build_subspace,
    full_xy_statevector,
    subspace_cost,
)

GAMMAS = (0.35, 0.7)
BETAS = (-0.6, -0.3)


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("numpy", "qiskit", "qiskit-aer", "amazon-braket-default-simulator")
    )
    return (
        f"# {platform.node()}: {cpu}, {os.cpu_count()} vCPU, {memory:.0f} GiB RAM, "
        f"Python {platform.python_version()}, {versions}"
    )


def dense_ising(n: int, seed: int) -> Ising:
    rng = np.random.default_rng(seed)
    return Ising(h=rng.normal(size=n), couplings=np.triu(rng.normal(size=(n, n)), k=1), offset=0.0)


def angles() -> QaoaAngles:
    return QaoaAngles(gammas=GAMMAS, betas=BETAS, expectation=0.0, evaluations=0)


def timed(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeats):
        result = None  # free the previous result first, so every run sees the same free memory
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def ours(ising: Ising) -> FloatArray:
    with single_threaded_blas():
        cost = ising.cost_vector()
        cost /= ising.scale()
        state = FullStateSimulator(cost, ising.num_qubits).statevector(GAMMAS, BETAS)
        return probabilities_of(state)


def braket_circuit(ising: Ising) -> Circuit:
    """The circuit of :func:`qaoa_circuit` in Braket's gates (``zz(θ) = exp(−iθ/2 Z⊗Z)`` like RZZ)."""
    n = ising.num_qubits
    scale = ising.scale()
    circuit = Circuit()
    for qubit in range(n):
        circuit.h(qubit)
    rows, cols = np.nonzero(ising.couplings)
    for gamma, beta in zip(GAMMAS, BETAS, strict=True):
        for i in np.flatnonzero(ising.h):
            circuit.rz(int(i), 2.0 * gamma * float(ising.h[i]) / scale)
        for i, j in zip(rows, cols, strict=True):
            circuit.zz(int(i), int(j), 2.0 * gamma * float(ising.couplings[i, j]) / scale)
        for qubit in range(n):
            circuit.rx(qubit, 2.0 * beta)
    circuit.state_vector()
    return circuit


def _braket_child(n: int, seed: int, queue: Any) -> None:
    ising = dense_ising(n, seed)
    circuit = braket_circuit(ising)
    start = time.perf_counter()
    result = LocalSimulator("braket_sv").run(circuit, shots=0).result()
    seconds = time.perf_counter() - start
    state = np.asarray(result.values[0], dtype=np.complex128)
    # Braket orders qubit 0 as the most significant bit: reverse the bits of every index.
    probabilities = np.abs(state.reshape((2,) * n).transpose(tuple(range(n))[::-1]).reshape(-1)) ** 2
    queue.put((seconds, probabilities))


def braket(n: int, seed: int, timeout: float) -> tuple[float | None, FloatArray | None, str]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_braket_child, args=(n, seed, queue))
    child.start()
    try:
        seconds, probabilities = queue.get(timeout=timeout)
    except Exception:  # queue.Empty on timeout; the child may also have died (memory)
        child.kill()
        child.join()
        reason = (
            f"stopped after {timeout:.0f} s" if child.exitcode in (None, -9) else f"exit {child.exitcode}"
        )
        return None, None, reason
    child.join()
    return float(seconds), np.asarray(probabilities), ""


def aer(ising: Ising, repeats: int, threads: int = 0) -> tuple[float, float, FloatArray]:
    circuit = qaoa_circuit(ising, angles(), measure=False)
    circuit.save_statevector()
    backend = AerSimulator(method="statevector", max_parallel_threads=threads)
    start = time.perf_counter()
    compiled = transpile(circuit, backend)
    transpile_seconds = time.perf_counter() - start
    seconds, result = timed(lambda: backend.run(compiled).result(), repeats)
    state = np.asarray(result.get_statevector(), dtype=np.complex128)
    return seconds, transpile_seconds, np.abs(state) ** 2


def x_mixer_table(sizes: list[int], repeats: int, braket_timeout: float) -> None:
    print("\n## X mixer, p = 2, dense Ising, problem → statevector\n")
    print(
        "| n | ours (s) | Aer (s) | Aer / ours | Aer 1 thread (s) | Aer 1 thread / ours | Aer transpile (s) "
        "| Braket sv (s) | Braket / ours | max abs Δp |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        ising = dense_ising(n, seed=n)
        ours_seconds, reference = timed(partial(ours, ising), repeats)
        aer_seconds, aer_transpile, aer_probabilities = aer(ising, repeats)
        single_seconds, _, _ = aer(ising, repeats, threads=1)
        braket_seconds, braket_probabilities, reason = braket(n, n, braket_timeout)
        differences = [float(np.abs(aer_probabilities - reference).max())]
        if braket_probabilities is not None:
            differences.append(float(np.abs(braket_probabilities - reference).max()))
        braket_cells = (
            f"{braket_seconds:.2f} | {braket_seconds / ours_seconds:.1f}×"
            if braket_seconds is not None
            else f"{reason} | –"
        )
        print(
            f"| {n} | {ours_seconds:.2f} | {aer_seconds:.2f} | {aer_seconds / ours_seconds:.1f}× | "
            f"{single_seconds:.2f} | {single_seconds / ours_seconds:.1f}× | "
            f"{aer_transpile:.2f} | {braket_cells} | {max(differences):.1e} |",
            flush=True,
        )


def xy_table(sizes: list[int], repeats: int) -> None:
    print("\n## XY mixer, B = n/2, p = 2, from the Dicke state: subspace vs full state\n")
    print(
        "| n | C(n, B) | subspace forward (s) | full-state forward (s) | full / subspace | "
        "subspace value+gradient (s) | max abs Δp |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        budget = n // 2
        ising = dense_ising(n, seed=100 + n)
        with single_threaded_blas():
            subspace = build_subspace(n, budget)
            cost = subspace_cost(ising, subspace.basis)
            simulator = SubspaceXYSimulator(subspace, cost)
            sub_seconds, sub_state = timed(partial(simulator.statevector, GAMMAS, BETAS), repeats)
            gradient = partial(simulator.value_and_gradient, GAMMAS, BETAS, MeanObjective(cost))
            grad_seconds, _ = timed(gradient, repeats)
            full_cost = ising.cost_vector()
            start = np.zeros(1 << n, dtype=np.complex128)
            start[subspace.basis] = 1.0 / math.sqrt(subspace.dimension)
            full_seconds, full_state = timed(
                partial(full_xy_statevector, full_cost, n, GAMMAS, BETAS, start), repeats
            )
        difference = float(np.abs(np.abs(full_state[subspace.basis]) ** 2 - np.abs(sub_state) ** 2).max())
        print(
            f"| {n} | {subspace.dimension} | {sub_seconds:.3f} | {full_seconds:.3f} | "
            f"{full_seconds / sub_seconds:.1f}× | {grad_seconds:.3f} | {difference:.1e} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="*", default=[16, 20, 24])
    parser.add_argument("--xy-sizes", type=int, nargs="*", default=[16, 20])
    parser.add_argument("--braket-timeout", type=float, default=900.0)
    args = parser.parse_args()
    print(machine_line())
    x_mixer_table(args.sizes, args.repeats, args.braket_timeout)
    xy_table(args.xy_sizes, args.repeats)


if __name__ == "__main__":
    main()
