"""What rounding the angles to the boundary's grid does to the sampled distribution.

The emitter writes every angle on a grid of ``10⁻⁶`` rad (``quantum/qasm.py``), so that a
literal carries at most 22.6 bits. This benchmark prepares real jobs exactly as a worker does
(real S&P 500 prices, Ledoit-Wolf, the default level and mixer, the angles planned on the local
simulator), transpiles them for the emulated cloud's device, and compares the exact output
distribution of the transpiled circuit with unrounded angles against the program the cloud
receives (parsed back from its text), by total variation distance (TVD).

Beside it, in the same run, two references:

* ``hardware``: the same circuit with every angle off by a Gaussian error of ``10⁻⁴`` rad (the
  scale to which hardware rotates), the TVD it causes;
* ``shots``: the TVD between the exact distribution and 4096 shots sampled from it (the noise
  every job lives with), the mean over 20 draws.

Run: ``.venv/bin/python -m benchmarks.angle_grid [--trials 10] [--assets 10 16]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
from qiskit import QuantumCircuit, qasm3
from qiskit.quantum_info import Statevector

from benchmarks.report import machine, markdown_header, markdown_row
from qhybrid.core.config import Settings
from qhybrid.demo import SAMPLE_TICKERS, sample_request
from qhybrid.domain.device import DeviceTarget
from qhybrid.domain.request import JobRequest
from qhybrid.jobs import pipeline
from qhybrid.portfolio.data import load_sp500
from qhybrid.quantum.circuit import transpile_for
from qhybrid.quantum.engine import build_circuit
from qhybrid.quantum.qasm import to_openqasm3

SHOTS = 4096
HARDWARE_SIGMA = 1e-4
#: The emulated cloud's device (``cloud/config.py``).
DEVICE = DeviceTarget("emulator", 32, ("rz", "sx", "x", "cx"), None)


def probabilities(circuit: QuantumCircuit) -> np.ndarray:
    """Exact output distribution over the measured bits (bit ``i`` = classical bit ``i``)."""
    bare = circuit.remove_final_measurements(inplace=False)
    return np.asarray(Statevector(bare).probabilities(), dtype=np.float64)


def tvd(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance."""
    return 0.5 * float(np.abs(p - q).sum())


def perturbed(circuit: QuantumCircuit, sigma: float, rng: np.random.Generator) -> QuantumCircuit:
    """Every gate angle off by a Gaussian error of ``sigma`` rad."""
    out = circuit.copy_empty_like()
    for instruction in circuit.data:
        operation = instruction.operation
        if operation.params and operation.name != "measure":
            operation = operation.to_mutable()
            operation.params = [float(p) + rng.normal(0.0, sigma) for p in operation.params]
        out.append(operation, instruction.qubits, instruction.clbits)
    return out


def trial(assets: int, seed: int) -> dict[str, float]:
    """One job's circuit: TVD of the grid, of hardware-scale errors, of 4096 shots."""
    rng = np.random.default_rng(seed)
    names, _, _ = load_sp500()
    tickers = tuple(str(t) for t in rng.choice(names, size=assets, replace=False)) if assets != 10 else None
    request = JobRequest.model_validate(sample_request(tickers=tickers or SAMPLE_TICKERS))
    settings = Settings()
    moments = pipeline.estimate(request)
    formulation = pipeline.formulate(request, moments)
    spec = pipeline.qaoa_spec(request, formulation, settings)
    obfuscated = pipeline.obfuscate(formulation, spec, "standard")
    plan = pipeline.plan(obfuscated, spec, seed)
    transpiled, _ = transpile_for(build_circuit(obfuscated.sent.ising, plan), DEVICE, seed=seed)
    exact = probabilities(transpiled)
    sent = qasm3.loads(to_openqasm3(transpiled))
    grid = tvd(exact, probabilities(sent))
    hardware = tvd(exact, probabilities(perturbed(transpiled, HARDWARE_SIGMA, rng)))
    shots = float(np.mean([tvd(exact, rng.multinomial(SHOTS, exact) / SHOTS) for _ in range(20)]))
    rotations = sum(1 for i in transpiled.data if i.operation.params)
    return {"grid": grid, "hardware": hardware, "shots": shots, "rotations": float(rotations)}


def main(argv: Sequence[str] | None = None) -> None:
    """Run the trials and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--assets", type=int, nargs="+", default=[10, 16])
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = []
    for assets in args.assets:
        found = [trial(assets, seed) for seed in range(args.trials)]
        rows.append((assets, found))
    print(f"# Angle grid (1e-6 rad) vs exact angles: {args.trials} jobs per size, standard level, x-warm")
    print(f"# {machine()}, {time.perf_counter() - started:.0f} s")
    for line in markdown_header(
        [
            "qubits",
            "rotations per circuit",
            "TVD grid (mean / max)",
            "TVD 1e-4 rad errors (mean)",
            f"TVD {SHOTS} shots (mean)",
        ]
    ):
        print(line)
    for assets, found in rows:
        grid = [f["grid"] for f in found]
        print(
            markdown_row(
                [
                    assets,
                    f"{np.mean([f['rotations'] for f in found]):.0f}",
                    f"{np.mean(grid):.1e} / {np.max(grid):.1e}",
                    f"{np.mean([f['hardware'] for f in found]):.1e}",
                    f"{np.mean([f['shots'] for f in found]):.1e}",
                ]
            )
        )


if __name__ == "__main__":
    main()
