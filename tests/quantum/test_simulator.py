from __future__ import annotations

import numpy as np
import pytest
from qiskit.quantum_info import Statevector

from qhybrid.domain.qubo import Ising
from qhybrid.quantum.angles import QaoaAngles
from qhybrid.quantum.circuit import qaoa_circuit
from qhybrid.quantum.simulator import (
    qaoa_expectation,
    qaoa_expectation_and_gradient,
    qaoa_statevector,
)
from tests.portfolio.factories import all_bits


def random_ising(n: int, seed: int, *, density: float = 1.0) -> Ising:
    rng = np.random.default_rng(seed)
    couplings = np.triu(rng.normal(size=(n, n)), k=1)
    couplings *= rng.random(size=(n, n)) < density
    h = rng.normal(size=n)
    h[rng.random(size=n) < 0.2] = 0.0  # some zero fields: the circuit must skip them
    return Ising(h=h, couplings=couplings, offset=float(rng.normal()))


@pytest.mark.parametrize("n", range(3, 9))
@pytest.mark.parametrize("reps", [1, 2, 3])
def test_matches_qiskit(n: int, reps: int) -> None:
    ising = random_ising(n, seed=10 * n + reps, density=0.7)
    rng = np.random.default_rng(n * reps)
    angles = QaoaAngles(
        gammas=tuple(rng.uniform(-1.0, 1.0, size=reps)),
        betas=tuple(rng.uniform(-1.0, 1.0, size=reps)),
        expectation=0.0,
        evaluations=0,
    )
    reference = Statevector(qaoa_circuit(ising, angles, measure=False)).data
    state = qaoa_statevector(ising.cost_vector() / ising.scale(), n, angles.gammas, angles.betas)
    assert state.dtype == np.complex128
    np.testing.assert_allclose(np.abs(state) ** 2, np.abs(reference) ** 2, atol=1e-12)
    # Equal up to a global phase, not only in distribution.
    assert abs(np.vdot(reference, state)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("n", range(1, 9))
def test_cost_vector_convention(n: int) -> None:
    ising = random_ising(n, seed=n)
    bits = all_bits(n)  # row k is the basis index k, bit i = x_i
    np.testing.assert_allclose(ising.cost_vector(), ising.energy_of_bits(bits), atol=1e-12)


def test_zero_angles_give_the_uniform_state() -> None:
    cost = np.arange(16, dtype=np.float64)
    state = qaoa_statevector(cost, 4, [0.0], [0.0])
    np.testing.assert_allclose(state, np.full(16, 0.25))
    assert qaoa_expectation(cost, 4, [0.0], [0.0]) == pytest.approx(cost.mean())


@pytest.mark.parametrize("n", [1, 4, 7, 11])
def test_gradient_matches_finite_differences(n: int) -> None:
    ising = random_ising(n, seed=3 * n)
    cost = ising.cost_vector() / ising.scale()
    rng = np.random.default_rng(n)
    gammas = list(rng.uniform(-1.0, 1.0, size=3))
    betas = list(rng.uniform(-1.0, 1.0, size=3))
    value, grad_gamma, grad_beta = qaoa_expectation_and_gradient(cost, n, gammas, betas)
    assert value == pytest.approx(qaoa_expectation(cost, n, gammas, betas), abs=1e-12)
    eps = 1e-6
    for k in range(3):
        up, down = list(gammas), list(gammas)
        up[k] += eps
        down[k] -= eps
        numeric = (qaoa_expectation(cost, n, up, betas) - qaoa_expectation(cost, n, down, betas)) / (2 * eps)
        assert grad_gamma[k] == pytest.approx(numeric, abs=1e-7)
        up, down = list(betas), list(betas)
        up[k] += eps
        down[k] -= eps
        numeric = (qaoa_expectation(cost, n, gammas, up) - qaoa_expectation(cost, n, gammas, down)) / (
            2 * eps
        )
        assert grad_beta[k] == pytest.approx(numeric, abs=1e-7)


def test_validation() -> None:
    with pytest.raises(ValueError, match="shape"):
        qaoa_statevector(np.zeros(7), 3, [0.1], [0.1])
    with pytest.raises(ValueError, match="as many"):
        qaoa_statevector(np.zeros(8), 3, [0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="finite"):
        qaoa_statevector(np.zeros(8), 3, [float("nan")], [0.1])
    with pytest.raises(ValueError, match="num_qubits"):
        qaoa_statevector(np.zeros(1), 0, [], [])


def test_nested_single_threaded_blocks_set_the_limit_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from qhybrid.quantum import simulator

    controller = simulator._thread_pools()
    calls: list[object] = []
    real = controller.limit

    def counted(**kwargs: object) -> object:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(controller, "limit", counted)

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in controller.select(user_api="blas").info()]

    with simulator.single_threaded_blas():
        with simulator.single_threaded_blas():
            assert set(blas_threads()) <= {1}
        # Leaving the inner block keeps the outer one's limit.
        assert set(blas_threads()) <= {1}
    assert len(calls) == 1
    with simulator.single_threaded_blas():
        pass
    assert len(calls) == 2


_BLAS_ACROSS_THREADS = """
import json, sys, threading
import numpy  # loads OpenBLAS
from qhybrid.quantum import simulator

pools = simulator._thread_pools()
def size():
    return sorted({pool["num_threads"] for pool in pools.select(user_api="blas").info()})

seen = {"start": size()}
if sys.argv[1] == "pinned":
    simulator.pin_single_threaded_blas()
a_in, a_go, a_out, b_in = (threading.Event() for _ in range(4))

def job_a():
    with simulator.single_threaded_blas():
        a_in.set()
        a_go.wait(10)
    a_out.set()

def job_b():
    a_in.wait(10)
    with simulator.single_threaded_blas():
        b_in.set()
        a_go.set()
        a_out.wait(10)
        seen["b inside, a gone"] = size()
    seen["both gone"] = size()

threads = [threading.Thread(target=job_a), threading.Thread(target=job_b)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(10)
print(json.dumps(seen))
"""


@pytest.mark.parametrize("mode", ["pinned", "blocks only"])
def test_a_pinned_process_keeps_one_blas_thread_while_job_threads_open_and_close_blocks(mode: str) -> None:
    # Two job threads as a worker runs them: A opens a block, B opens one, A leaves while B is
    # still inside. Unpinned, threadpoolctl (3.8) lets only A change the pool and A's exit gives it
    # back its threads under B's simulation; pinned (a worker's start-up), it stays at one.
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"}}
    out = subprocess.run(
        [sys.executable, "-c", _BLAS_ACROSS_THREADS, mode],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    seen = json.loads(out.stdout)
    assert seen["start"] and max(seen["start"]) > 1, f"needs a BLAS pool of 2+ threads: {seen}"
    if mode == "pinned":
        assert seen["b inside, a gone"] == [1]
        assert seen["both gone"] == [1]
    else:
        # What the pin is for (threadpoolctl's documented behaviour; if a release changes it, the
        # pin may no longer be needed): B's block ran on the pool's full size.
        assert seen["b inside, a gone"] == seen["start"]
