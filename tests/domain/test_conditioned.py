"""The conditioned rounding against brute-force enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qhybrid.domain import conditioned


def enumerated(values: np.ndarray, weight: int) -> dict[tuple[int, ...], float]:
    """P(x) ∝ Π c^x (1 − c)^(1 − x) over the weight-B vectors, by enumeration."""
    table = {}
    for bits in itertools.product((0, 1), repeat=values.size):
        if sum(bits) == weight:
            x = np.array(bits)
            table[bits] = float(np.prod(np.where(x == 1, values, 1.0 - values)))
    total = sum(table.values())
    return {bits: p / total for bits, p in table.items()}


@pytest.mark.parametrize("seed", range(4))
def test_exact_probabilities_match_enumeration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, weight = 7, int(rng.integers(1, 7))
    values = rng.uniform(0.0, 1.0, size=n)
    values[int(rng.integers(n))] = 0.0  # a relaxation has exact zeros
    expected = enumerated(values, weight)
    bits = np.array(list(expected), dtype=np.uint8)
    got = np.exp(conditioned.log_probabilities(values, weight, bits))
    np.testing.assert_allclose(got, list(expected.values()), atol=1e-12)
    # Rows of another weight have no probability.
    off = np.zeros((1, n), dtype=np.uint8)
    assert conditioned.log_probabilities(values, weight, off)[0] == -np.inf


def test_sampling_follows_the_distribution() -> None:
    values = np.array([0.9, 0.2, 0.5, 0.7, 0.1, 0.6])
    weight, shots = 3, 60_000
    draws = conditioned.sample(values, weight, shots, np.random.default_rng(1))
    assert np.all(draws.sum(axis=1) == weight)
    expected = enumerated(values, weight)
    keys, counts = np.unique(draws, axis=0, return_counts=True)
    observed = {tuple(int(b) for b in row): c / shots for row, c in zip(keys, counts, strict=True)}
    distance = 0.5 * sum(abs(observed.get(k, 0.0) - p) for k, p in expected.items())
    assert distance < 0.02


def test_long_vectors_do_not_underflow() -> None:
    values = np.full(400, 0.05)
    draws = conditioned.sample(values, 20, 10, np.random.default_rng(0))
    assert np.all(draws.sum(axis=1) == 20)


def test_impossible_or_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="positive probability"):
        conditioned.inclusion_table(np.array([0.0, 0.0, 0.5]), 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        conditioned.inclusion_table(np.array([1.5, 0.5]), 1)
    with pytest.raises(ValueError, match="weight"):
        conditioned.inclusion_table(np.array([0.5, 0.5]), 3)
