"""Readout-error mitigation: the tensored inverse on the observed outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from qhybrid.quantum.readout import mitigate_counts


def flip(counts: dict[str, int], errors: list[float], rng: np.random.Generator) -> dict[str, int]:
    """Each measured bit read wrong with probability e_i: a real readout channel on real shots."""
    noisy: dict[str, int] = {}
    for outcome, count in counts.items():
        bits = np.array([int(c) for c in outcome], dtype=np.uint8)
        wrong = rng.random((count, bits.size)) < np.array(errors)
        for row in bits[np.newaxis, :] ^ wrong.astype(np.uint8):
            key = "".join(str(int(b)) for b in row)
            noisy[key] = noisy.get(key, 0) + 1
    return noisy


def distance(first: dict[str, int], second: dict[str, int]) -> float:
    total_a, total_b = sum(first.values()), sum(second.values())
    keys = set(first) | set(second)
    return 0.5 * sum(abs(first.get(k, 0) / total_a - second.get(k, 0) / total_b) for k in keys)


def test_mitigation_brings_a_noisy_distribution_back_towards_the_true_one() -> None:
    rng = np.random.default_rng(3)
    truth = {"110100": 6000, "101010": 3000, "000111": 1000}  # a peaked, QAOA-like distribution
    errors = [0.02, 0.05, 0.03, 0.08, 0.01, 0.04]
    noisy = flip(truth, errors, rng)
    corrected = mitigate_counts(noisy, errors)
    assert sum(corrected.values()) == sum(noisy.values())
    before, after = distance(noisy, truth), distance(corrected, truth)
    assert after < 0.5 * before, (before, after)
    # The peak gets its shots back.
    assert corrected["110100"] > noisy["110100"]


def test_zero_errors_change_nothing() -> None:
    counts = {"01": 7, "10": 3}
    assert mitigate_counts(counts, [0.0, 0.0]) == counts


def test_bad_errors_are_refused() -> None:
    with pytest.raises(ValueError, match="readout errors"):
        mitigate_counts({"0": 1}, [0.5])
    with pytest.raises(ValueError):
        mitigate_counts({"01": 1}, [0.1])
