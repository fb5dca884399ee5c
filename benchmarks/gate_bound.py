"""Transpiled QAOA gate counts against the gateway's gate bound (``gateway/payload.py: gate_bound``).

For dense problems (every pair coupled, as real portfolio problems are) and every mixer, the
circuit of :func:`qhybrid.quantum.engine.build_circuit` is transpiled as a job does
(``transpile_for``, optimisation level 3) for the emulated cloud's all-to-all device and for IBM's
heavy-hex FakeTorino; the table gives the two-qubit and total gate counts, the SWAPs the routing
added per native two-qubit gate (``(T_device − T_all-to-all) / 3 / T_all-to-all``, the figure
behind ``ROUTING_SWAPS_PER_GATE``), and the bound at the job's p and at p = 8.

Run: ``.venv/bin/python -m benchmarks.gate_bound``.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.report import machine, markdown_header, markdown_row
from qhybrid.backends.ibm import fake_backend, ibm_target
from qhybrid.domain.device import DeviceTarget
from qhybrid.domain.qubo import Ising
from qhybrid.gateway.payload import MAX_REPS, gate_bound
from qhybrid.quantum.angles import QaoaAngles
from qhybrid.quantum.circuit import transpile_for
from qhybrid.quantum.engine import QaoaPlan, build_circuit
from qhybrid.quantum.spec import QaoaSpec

CASES = ((6, 1), (10, 3), (16, 2), (24, 1))
MIXERS = ("x", "x-warm", "xy")


def main() -> None:
    """Print the table."""
    started = time.perf_counter()
    rng = np.random.default_rng(1)
    all_to_all = DeviceTarget("emulator", 32, ("rz", "sx", "x", "cx"), None)
    torino = ibm_target(fake_backend("FakeTorino"))
    rows = []
    for n, p in CASES:
        ising = Ising(rng.normal(size=n), np.triu(rng.normal(size=(n, n)) + 3.0, 1), 0.0)
        for mixer in MIXERS:
            angles = QaoaAngles(tuple(rng.uniform(0, 1, p)), tuple(rng.uniform(0, 1, p)), 0.0, 0)
            warm = tuple(rng.uniform(0.1, 0.9, n)) if mixer == "x-warm" else None
            plan = QaoaPlan(QaoaSpec(mixer=mixer, reps=p), angles, n // 2, warm, {})  # type: ignore[arg-type]
            circuit = build_circuit(ising, plan)
            flat = transpile_for(circuit, all_to_all, seed=3)[1]
            heavy = transpile_for(circuit, torino, seed=3)[1]
            swaps = (heavy.two_qubit_gates - flat.two_qubit_gates) / 3 / max(flat.two_qubit_gates, 1)
            rows.append(
                [
                    n,
                    p,
                    mixer,
                    f"{flat.two_qubit_gates} / {flat.total_gates}",
                    f"{heavy.two_qubit_gates} / {heavy.total_gates}",
                    f"{swaps:.2f}",
                    f"{gate_bound(n, p):,}",
                    f"{gate_bound(n, MAX_REPS):,}",
                ]
            )
    elapsed = time.perf_counter() - started
    print(f"# Transpiled QAOA gate counts vs the gateway's bound; {machine()}; {elapsed:.0f} s")
    for line in markdown_header(
        [
            "n",
            "p",
            "mixer",
            "all-to-all: 2q / total",
            "FakeTorino: 2q / total",
            "SWAPs per native 2q gate",
            "bound at p",
            f"bound at p = {MAX_REPS} (enforced)",
        ]
    ):
        print(line)
    for row in rows:
        print(markdown_row(row))


if __name__ == "__main__":
    main()
