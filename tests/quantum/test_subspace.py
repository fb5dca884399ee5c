from __future__ import annotations

import math

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import Statevector

from qhybrid.domain import conditioned
from qhybrid.quantum.circuit import append_weighted_dicke, dicke_circuit, weighted_dicke_circuit
from qhybrid.quantum.subspace import (
    SubspaceXYSimulator,
    basis_bits,
    build_subspace,
    conditioned_state,
    full_xy_statevector,
    ring_edges,
    subspace_cost,
    weight_basis,
)
from tests.portfolio.factories import all_bits
from tests.quantum.test_simulator import random_ising


def test_ring_edges_order() -> None:
    assert ring_edges(1) == ()
    assert ring_edges(2) == ((0, 1),)
    assert ring_edges(3) == ((0, 1), (1, 2), (2, 0))
    assert ring_edges(6) == ((0, 1), (2, 3), (4, 5), (1, 2), (3, 4), (5, 0))
    assert ring_edges(7) == ((0, 1), (2, 3), (4, 5), (1, 2), (3, 4), (5, 6), (6, 0))
    with pytest.raises(ValueError, match="num_qubits"):
        ring_edges(0)


@pytest.mark.parametrize(("n", "weight"), [(1, 0), (1, 1), (5, 2), (8, 4), (12, 3), (22, 2)])
def test_weight_basis(n: int, weight: int) -> None:
    basis = weight_basis(n, weight)
    assert basis.size == math.comb(n, weight)
    assert np.all(np.diff(basis) > 0)
    assert np.all(np.bitwise_count(basis) == weight)
    assert basis.max(initial=0) < 1 << n
    with pytest.raises(ValueError, match="hamming weight"):
        weight_basis(n, n + 1)


def test_subspace_pairs_and_cost() -> None:
    n, weight = 7, 3
    subspace = build_subspace(n, weight)
    assert subspace is build_subspace(n, weight)  # cached
    for (i, j), (p, q) in zip(subspace.edges, subspace.pairs, strict=True):
        assert p.size == math.comb(n - 2, weight - 1)
        np.testing.assert_array_equal(subspace.basis[p] ^ subspace.basis[q], (1 << i) | (1 << j))
    ising = random_ising(n, seed=2)
    np.testing.assert_allclose(
        subspace_cost(ising, subspace.basis), ising.cost_vector()[subspace.basis], atol=1e-12
    )
    np.testing.assert_array_equal(basis_bits(subspace.basis, n), all_bits(n)[subspace.basis])
    with pytest.raises(ValueError, match="hamming weight"):
        subspace.position(0)


@pytest.mark.parametrize("n", range(1, 9))
def test_dicke_circuit_is_exact(n: int) -> None:
    for weight in range(n + 1):
        state = Statevector(dicke_circuit(n, weight)).data
        expected = np.zeros(1 << n)
        expected[weight_basis(n, weight)] = 1.0 / math.sqrt(math.comb(n, weight))
        np.testing.assert_allclose(state, expected, atol=1e-12)


@pytest.mark.parametrize("n", range(2, 8))
def test_weighted_dicke_circuit_prepares_the_conditioned_rounding(n: int) -> None:
    rng = np.random.default_rng(n)
    values = rng.uniform(0.0, 1.0, size=n)
    values[0] = 0.0  # exact 0 and 1 (a relaxation has them) must work too
    values[-1] = 1.0
    for weight in range(1, n):
        state = Statevector(weighted_dicke_circuit(values, weight)).data
        basis = weight_basis(n, weight)
        expected = np.zeros(1 << n)
        bits = basis_bits(basis, n)
        expected[basis] = np.sqrt(np.exp(conditioned.log_probabilities(values, weight, bits)))
        np.testing.assert_allclose(state, expected, atol=1e-10)
        # The subspace simulator's start state is the same vector.
        np.testing.assert_allclose(
            conditioned_state(build_subspace(n, weight), values), expected[basis], atol=1e-12
        )
        # Same gates as the Dicke circuit, so the gateway's gate bound (counted on it) still holds.
        assert weighted_dicke_circuit(values, weight).count_ops() == dicke_circuit(n, weight).count_ops()


def test_weighted_dicke_with_equal_values_is_the_dicke_state() -> None:
    state = Statevector(weighted_dicke_circuit([0.3] * 6, 2)).data
    np.testing.assert_allclose(state, Statevector(dicke_circuit(6, 2)).data, atol=1e-12)


def test_dicke_circuit_uses_standard_gates_only() -> None:
    assert set(dicke_circuit(9, 4).count_ops()) <= {"x", "ry", "cx"}
    with pytest.raises(ValueError, match="weight"):
        dicke_circuit(3, 4)


@pytest.mark.parametrize("start", [None, 0b01101001])
def test_subspace_matches_the_full_state_xy(start: int | None) -> None:
    n, weight = 8, 4
    ising = random_ising(n, seed=9)
    subspace = build_subspace(n, weight)
    cost = subspace_cost(ising, subspace.basis)
    simulator = SubspaceXYSimulator(subspace, cost, start=start)
    gammas, betas = [0.3, -0.8, 0.5], [0.4, 1.1, -0.7]
    state = simulator.statevector(gammas, betas)
    initial = np.zeros(1 << n, dtype=np.complex128)
    initial[subspace.basis] = simulator.initial_state()
    full = full_xy_statevector(ising.cost_vector(), n, gammas, betas, initial)
    np.testing.assert_allclose(full[subspace.basis], state, atol=1e-12)
    outside = np.ones(1 << n, dtype=bool)
    outside[subspace.basis] = False
    assert np.abs(full[outside]).max() < 1e-14
    assert np.linalg.norm(state) == pytest.approx(1.0, abs=1e-12)


def test_validation() -> None:
    subspace = build_subspace(5, 2)
    with pytest.raises(ValueError, match="shape"):
        SubspaceXYSimulator(subspace, np.zeros(3))
    with pytest.raises(ValueError, match="hamming weight"):
        SubspaceXYSimulator(subspace, np.zeros(10), start=0b111)
    with pytest.raises(ValueError, match="as many"):
        SubspaceXYSimulator(subspace, np.zeros(10)).statevector([0.1], [])
    with pytest.raises(ValueError, match="shape"):
        full_xy_statevector(np.zeros(8), 3, [0.1], [0.1], np.zeros(4, dtype=np.complex128))


@pytest.mark.parametrize(("n", "weight"), [(4, 2), (6, 3), (7, 2), (8, 5), (5, 0), (5, 5)])
def test_appended_weighted_dicke_gates_are_the_composed_circuits(n: int, weight: int) -> None:
    # build_circuit appends the gates into the job's circuit instead of composing a separate
    # circuit: the instructions must be the same, in the same order, on the same qubits.
    values = np.random.default_rng(n * 10 + weight).uniform(0.05, 0.95, n)
    composed = QuantumCircuit(n + 1, n)
    composed.compose(weighted_dicke_circuit(values, weight), qubits=range(n), inplace=True)
    appended = QuantumCircuit(n + 1, n)
    append_weighted_dicke(appended, values, weight)
    assert list(appended.data) == list(composed.data)
    assert appended == composed
