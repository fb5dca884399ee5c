"""Every elementary transform against its documented effect on the energy of every bitstring."""

from __future__ import annotations

import numpy as np
import pytest

from qhybrid.domain.qubo import Ising
from qhybrid.proxy.transforms import (
    add_noise,
    append_twins,
    coefficient_spreads,
    flip_spins,
    ising_to_qubo,
    permute,
    rescale,
    sent_to_true,
    subspace_mask,
    true_to_sent,
)
from tests.portfolio.factories import all_bits
from tests.proxy.helpers import energies, random_ising

SEEDS = range(4)


@pytest.mark.parametrize("seed", SEEDS)
def test_ising_to_qubo_keeps_every_energy(seed: int) -> None:
    ising = random_ising(7, seed)
    qubo = ising_to_qubo(ising)
    bits = all_bits(7)
    np.testing.assert_allclose(qubo.energy(bits), energies(ising), atol=1e-10)
    back = qubo.to_ising()
    np.testing.assert_allclose(back.h, ising.h, atol=1e-12)
    np.testing.assert_allclose(back.couplings, ising.couplings, atol=1e-12)
    assert back.offset == pytest.approx(ising.offset)


@pytest.mark.parametrize("seed", SEEDS)
def test_permute_moves_variable_i_to_its_position(seed: int) -> None:
    ising = random_ising(6, seed)
    positions = np.random.default_rng(seed).permutation(6)
    moved = permute(ising, positions)
    x = all_bits(6)
    y = np.zeros_like(x)
    y[:, positions] = x
    np.testing.assert_allclose(moved.energy_of_bits(y), ising.energy_of_bits(x), atol=1e-10)


def test_permute_rejects_a_non_permutation() -> None:
    with pytest.raises(ValueError, match="permutation"):
        permute(random_ising(3, 0), np.array([0, 0, 1]))


@pytest.mark.parametrize("seed", SEEDS)
def test_flip_spins_is_a_gauge(seed: int) -> None:
    ising = random_ising(6, seed)
    flips = np.random.default_rng(seed).random(6) < 0.5
    flipped = flip_spins(ising, flips)
    x = all_bits(6)
    np.testing.assert_allclose(
        flipped.energy_of_bits(x ^ flips.astype(np.uint8)), ising.energy_of_bits(x), atol=1e-10
    )


def test_rescale_is_affine() -> None:
    ising = random_ising(5, 1)
    scaled = rescale(ising, 2.5, -3.0)
    np.testing.assert_allclose(energies(scaled), 2.5 * energies(ising) - 3.0, atol=1e-10)
    with pytest.raises(ValueError, match="positive"):
        rescale(ising, 0.0, 0.0)


@pytest.mark.parametrize(
    ("factor", "shift"), [(-0.8312345, 0.0), (0.8312345, float("nan")), (float("inf"), 1.25)]
)
def test_a_refused_rescale_keeps_its_values_out_of_the_message(factor: float, shift: float) -> None:
    """The factor and shift are key material: the message reaches job events and worker logs."""
    with pytest.raises(ValueError) as caught:
        rescale(random_ising(4, 2), factor, shift)
    text = str(caught.value)
    assert "positive and finite" in text
    for secret in ("0.831", "8312345", "1.25", "inf", "nan"):
        assert secret not in text


@pytest.mark.parametrize("seed", SEEDS)
def test_add_noise_adds_the_returned_noise_problem(seed: int) -> None:
    ising = random_ising(6, seed)
    noisy, noise = add_noise(ising, np.random.default_rng(seed), 0.3, 0.2)
    np.testing.assert_allclose(energies(noisy), energies(ising) + energies(noise), atol=1e-10)
    assert noise.offset == 0.0
    assert np.all(np.tril(noise.couplings) == 0.0)


def test_add_noise_has_the_requested_spread() -> None:
    ising = random_ising(60, 3)
    _, noise = add_noise(ising, np.random.default_rng(0), 0.5, 2.0)
    upper = noise.couplings[np.triu_indices(60, k=1)]
    assert noise.h.std() == pytest.approx(0.5, rel=0.2)
    assert upper.std() == pytest.approx(2.0, rel=0.05)


def test_coefficient_spreads_ignore_constant_parts() -> None:
    n = 6
    h = np.arange(n, dtype=np.float64)
    couplings = np.triu(np.full((n, n), 5.0), k=1)
    field, coupling = coefficient_spreads(Ising(h, couplings))
    assert field == pytest.approx(h.std())
    assert coupling == pytest.approx(5.0)  # no spread: the mean magnitude stands in


@pytest.mark.parametrize("seed", SEEDS)
def test_twins_change_every_energy_by_a_constant_at_their_designated_values(seed: int) -> None:
    n = 6
    ising = random_ising(n, seed)
    rng = np.random.default_rng(seed)
    templates = np.array([1, 4, 1])  # a template copied twice, too
    partners = np.array([2, 0, 5])
    active = rng.random(3) < 0.5
    extended = append_twins(ising, templates, partners, active)
    assert extended.num_qubits == n + 3
    x = all_bits(n)
    y = np.hstack([x, np.broadcast_to(active.astype(np.uint8), (x.shape[0], 3))])
    difference = extended.energy_of_bits(y) - ising.energy_of_bits(x)
    np.testing.assert_allclose(difference, difference[0], atol=1e-9)


def test_twins_off_leave_every_energy_unchanged() -> None:
    ising = random_ising(5, 7)
    extended = append_twins(ising, np.array([0, 3]), np.array([1, 2]), np.array([False, False]))
    x = all_bits(5)
    y = np.hstack([x, np.zeros((x.shape[0], 2), dtype=np.uint8)])
    np.testing.assert_allclose(extended.energy_of_bits(y), ising.energy_of_bits(x), atol=1e-10)


def test_a_twin_copies_its_templates_row() -> None:
    n = 6
    ising = random_ising(n, 2)
    templates, partners = np.array([3]), np.array([1])
    q = ising_to_qubo(append_twins(ising, templates, partners, np.array([True]))).matrix
    twin, template = n, 3
    others = [j for j in range(n) if j != template]
    np.testing.assert_allclose(q[twin, others], q[template, others])
    assert q[twin, twin] == pytest.approx(q[template, template])
    assert q[twin, template] == pytest.approx(q[template, 1])


def test_twins_need_distinct_partners() -> None:
    with pytest.raises(ValueError, match="distinct"):
        append_twins(random_ising(4, 0), np.array([1]), np.array([1]), np.array([False]))


@pytest.mark.parametrize("weight", [0, 2, 3, 6])
def test_subspace_mask_is_exact_on_its_weight_only(weight: int) -> None:
    n = 6
    ising = random_ising(n, weight)
    rng = np.random.default_rng(weight)
    masked = subspace_mask(ising, weight, rng.normal(size=n) * 3.0, 1.7)
    x = all_bits(n)
    on = x.sum(axis=1) == weight
    before, after = energies(ising), energies(masked)
    np.testing.assert_allclose(after[on], before[on], atol=1e-9)
    assert not np.allclose(after[~on], before[~on])


@pytest.mark.parametrize("seed", SEEDS)
def test_bit_maps_are_inverse(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, total = 5, 8
    positions = rng.permutation(total)[:n]
    flips = rng.random(total) < 0.5
    x = all_bits(n)
    decoys = rng.integers(0, 2, size=total - n).astype(np.uint8)
    sent = true_to_sent(x, positions, flips, decoys)
    np.testing.assert_array_equal(sent_to_true(sent, positions, flips), x)
    decoy_qubits = np.setdiff1d(np.arange(total), positions)
    np.testing.assert_array_equal(
        sent[:, decoy_qubits] ^ flips[decoy_qubits], np.broadcast_to(decoys, (32, 3))
    )
