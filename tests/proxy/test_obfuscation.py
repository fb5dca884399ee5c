"""The obfuscation pipeline: exact inverses, the XY weight, the warm start, keys and levels."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest

from qhybrid.domain.privacy import PRIVACY_LEVELS
from qhybrid.domain.qubo import Ising
from qhybrid.proxy import obfuscation
from qhybrid.proxy.obfuscation import LEVELS, ObfuscationKey, decoy_count, deobfuscate_counts, obfuscate
from qhybrid.quantum.decode import decode_counts
from tests.portfolio.factories import all_bits, random_problem
from tests.proxy.helpers import random_ising

MIXERS = ("x", "x-warm", "xy")
LEVELS_ON = ("low", "standard", "high")


def portfolio(n: int = 8, budget: int = 4, seed: int = 0) -> tuple[Ising, int, np.ndarray]:
    """A penalised selection problem (all couplings positive) with its budget and warm start."""
    problem = random_problem(n, budget, seed)
    qubo, _ = problem.to_qubo()
    return qubo.to_ising(), budget, problem.relaxation()


def run(ising: Ising, level: str, mixer: str, budget: int, warm: np.ndarray, seed: int = 0):
    return obfuscate(
        ising,
        level=level,  # type: ignore[arg-type]
        mixer=mixer,
        hamming_weight=budget if mixer in ("xy", "xy-warm") else None,
        warm_start=warm if mixer in ("x-warm", "xy-warm") else None,
        rng=np.random.default_rng(seed),
    )


@pytest.fixture
def noiseless(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every level without its noise: the pipeline must then be exact."""
    quiet = {
        name: dataclasses.replace(s, field_noise=0.0, coupling_noise=0.0, warm_noise=0.0)
        for name, s in LEVELS.items()
    }
    monkeypatch.setattr(obfuscation, "LEVELS", quiet)


def test_off_is_the_identity_on_numbers() -> None:
    ising, budget, warm = portfolio()
    for mixer in MIXERS:
        sent, key = run(ising, "off", mixer, budget, warm)
        assert sent.ising is ising
        assert sent.num_qubits == 8
        assert key == ObfuscationKey.identity(8)
        if mixer == "x-warm":
            np.testing.assert_array_equal(sent.warm_start, warm)
        assert sent.hamming_weight == (budget if mixer == "xy" else None)
    counts = {"10110010": 5, "01010101": 3}
    assert deobfuscate_counts(counts, ObfuscationKey.identity(8)) == counts


@pytest.mark.usefixtures("noiseless")
@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("level", LEVELS_ON)
@pytest.mark.parametrize("seed", range(3))
def test_without_noise_every_energy_is_kept_up_to_scale_and_a_constant(
    level: str, mixer: str, seed: int
) -> None:
    ising, budget, warm = portfolio(seed=seed)
    sent, key = run(ising, level, mixer, budget, warm, seed)
    assert sent.num_qubits == 8 + decoy_count(level, 8)  # type: ignore[arg-type]
    x = all_bits(8)
    if mixer == "xy":  # the XY mask is exact on the weight the mixer keeps, and only there
        x = x[x.sum(axis=1) == budget]
    carried = key.sent_bits(x)
    np.testing.assert_array_equal(key.true_bits(carried), x)
    difference = sent.ising.energy_of_bits(carried) - key.scale * ising.energy_of_bits(x)
    np.testing.assert_allclose(difference, difference[0], atol=1e-9 * key.scale * np.abs(ising.h).sum())


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("level", LEVELS_ON)
def test_noise_has_the_calibrated_spread(level: str, mixer: str) -> None:
    n = 40
    ising, budget, warm = portfolio(n, n // 2, seed=4)
    sent, key = run(ising, level, mixer, budget, warm, seed=1)
    positions = np.array(key.positions)
    signs = np.where(np.array(key.flips)[positions], -1.0, 1.0)
    sent_full = sent.ising.couplings + sent.ising.couplings.T
    back = sent_full[np.ix_(positions, positions)] * np.outer(signs, signs) / key.scale
    true_full = ising.couplings + ising.couplings.T
    iu = np.triu_indices(n, k=1)
    noise = back[iu] - true_full[iu]
    if mixer == "xy":  # the mask adds exact row shifts w_i + w_j: remove them by double centring
        noise = noise - noise.mean()
        matrix = np.zeros((n, n))
        matrix[iu] = noise
        matrix = matrix + matrix.T
        rows = matrix.sum(axis=1) / (n - 2)
        noise = (matrix - rows[:, None] - rows[None, :] + rows.sum() / (n - 1))[iu]
    spread = true_full[iu].std()
    assert noise.std() == pytest.approx(LEVELS[level].coupling_noise * spread, rel=0.15)  # type: ignore[index]


@pytest.mark.parametrize("level", LEVELS_ON)
@pytest.mark.parametrize("seed", range(4))
def test_xy_keeps_a_fixed_hamming_weight_in_the_sent_basis(level: str, seed: int) -> None:
    ising, budget, warm = portfolio(seed=seed)
    sent, key = run(ising, level, "xy", budget, warm, seed)
    assert sent.hamming_weight is not None
    x = all_bits(8)
    feasible = x[x.sum(axis=1) == budget]
    carried = key.sent_bits(feasible)
    np.testing.assert_array_equal(carried.sum(axis=1), sent.hamming_weight)
    # Only the global complement is allowed: a per-qubit gauge would break the weight.
    assert len(set(key.flips)) == 1


@pytest.mark.usefixtures("noiseless")
@pytest.mark.parametrize("seed", range(3))
def test_xy_mask_is_exact_on_the_whole_sent_subspace(seed: int) -> None:
    ising, budget, warm = portfolio(seed=seed)
    sent, key = run(ising, "standard", "xy", budget, warm, seed)
    assert sent.hamming_weight is not None
    total = sent.num_qubits
    y = all_bits(total)
    y = y[y.sum(axis=1) == sent.hamming_weight]
    real = key.true_bits(y)
    carried = key.sent_bits(real)
    at_designated = np.all(carried == y, axis=1)
    difference = sent.ising.energy_of_bits(y[at_designated]) - key.scale * ising.energy_of_bits(
        real[at_designated]
    )
    np.testing.assert_allclose(difference, difference[0], atol=1e-9 * key.scale * np.abs(ising.h).sum())


@pytest.mark.usefixtures("noiseless")
@pytest.mark.parametrize("level", LEVELS_ON)
@pytest.mark.parametrize("seed", range(3))
def test_warm_start_is_permuted_and_flipped_with_the_qubits(level: str, seed: int) -> None:
    ising, budget, warm = portfolio(seed=seed)
    sent, key = run(ising, level, "x-warm", budget, warm, seed)
    assert sent.warm_start is not None
    positions = np.array(key.positions)
    flips = np.array(key.flips)
    expected = np.where(flips[positions], 1.0 - warm, warm)
    np.testing.assert_allclose(sent.warm_start[positions], expected)
    # A decoy starts at its template's value and is designated held when that value is high.
    for qubit, value in zip(key.decoy_positions, key.decoy_values, strict=True):
        start = sent.warm_start[qubit]
        start = 1.0 - start if flips[qubit] else start
        assert np.isclose(warm, start).any()
        assert value == (start >= 0.5)


@pytest.mark.parametrize("level", LEVELS_ON)
@pytest.mark.parametrize("seed", range(3))
def test_xy_warm_start_state_comes_back_as_budget_portfolios(level: str, seed: int) -> None:
    """The weighted start is drawn in the sent basis and deobfuscated like the counts."""
    from qhybrid.quantum.engine import sample_start_state

    ising, budget, warm = portfolio(seed=seed)
    sent, key = run(ising, level, "xy-warm", budget, warm, seed)
    assert sent.hamming_weight is not None and sent.warm_start is not None
    assert len(set(key.flips)) == 1  # the global complement only
    draws = sample_start_state(
        "xy-warm",
        sent.num_qubits,
        hamming_weight=sent.hamming_weight,
        warm_start=np.clip(sent.warm_start, 1e-9, 1 - 1e-9),
        shots=2000,
        rng=np.random.default_rng(seed),
    )
    assert np.all(draws.sum(axis=1) == sent.hamming_weight)
    true = key.true_bits(draws)
    weights = true.sum(axis=1)
    if key.num_qubits == key.num_variables:
        assert np.all(weights == budget)
    else:  # a decoy may hold one of the units
        assert np.all(weights <= budget + len(key.decoy_positions)) and np.mean(weights == budget) > 0.5
    # The noised warm start still points at the relaxation: held assets are drawn more often.
    held = true[:, warm > 0.9].mean() if np.any(warm > 0.9) else 1.0
    empty = true[:, warm < 0.1].mean() if np.any(warm < 0.1) else 0.0
    assert held > empty


def test_per_qubit_flips_for_the_x_mixers_only() -> None:
    ising, _, warm = portfolio(n=30, budget=15)
    _, key = run(ising, "standard", "x-warm", 15, warm)
    assert 0 < sum(key.flips) < len(key.flips)


@pytest.mark.parametrize("level", LEVELS_ON)
def test_warm_start_noise_stays_in_the_unit_interval(level: str) -> None:
    ising, budget, warm = portfolio()
    sent, _ = run(ising, level, "x-warm", budget, warm)
    assert sent.warm_start is not None
    assert np.all((sent.warm_start >= 0.0) & (sent.warm_start <= 1.0))


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("level", LEVELS_ON)
def test_deobfuscate_counts_inverts_exactly(level: str, mixer: str) -> None:
    ising, budget, warm = portfolio()
    sent, key = run(ising, level, mixer, budget, warm, seed=3)
    rng = np.random.default_rng(5)
    real = rng.integers(0, 2, size=(40, 8)).astype(np.uint8)
    decoys = rng.integers(0, 2, size=(40, sent.num_qubits - 8)).astype(np.uint8)
    carried = key.sent_bits(real, decoys)
    counts: dict[str, int] = {}
    expected: dict[str, int] = {}
    for row_sent, row_real in zip(carried, real, strict=True):
        text = "".join(map(str, row_sent))
        counts[text] = counts.get(text, 0) + 7
        truth = "".join(map(str, row_real))
        expected[truth] = expected.get(truth, 0) + 7
    merged = deobfuscate_counts(counts, key)
    assert merged == expected
    assert sum(merged.values()) == sum(counts.values())
    bits, weights = decode_counts(merged, 8)  # the job's decoder accepts the result
    assert bits.shape[1] == 8 and weights.sum() == sum(counts.values())


def test_deobfuscate_counts_validates_and_drops_zero_counts() -> None:
    key = ObfuscationKey(2, 3, (2, 0), (True, False, False), (True,))
    # variable 0 is qubit 2 (not flipped), variable 1 is qubit 0 (flipped)
    assert deobfuscate_counts({"101": 4, "001": 0}, key) == {"10": 4}
    assert deobfuscate_counts({}, key) == {}
    for bad in ({"10": 1}, {"1a1": 1}, {"101": -1}, {"101": 1.5}):
        with pytest.raises(ValueError, match="outcome"):
            deobfuscate_counts(bad, key)  # type: ignore[arg-type]


def test_key_round_trips_and_reveals_nothing() -> None:
    ising, budget, warm = portfolio()
    _, key = run(ising, "high", "x-warm", budget, warm)
    assert ObfuscationKey.from_bytes(key.to_bytes()) == key
    text = repr(key) + str(key) + f"{key}"
    assert text == "ObfuscationKey(<secret>)" * 3
    assert not re.search(r"\d", repr(key))


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[]", b'{"version": 99}', b'{"version": 1, "num_variables": 2}'],
)
def test_key_from_bytes_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ValueError, match="key"):
        ObfuscationKey.from_bytes(data)


def test_key_validates_itself() -> None:
    with pytest.raises(ValueError, match="positions"):
        ObfuscationKey(2, 3, (0, 0), (False,) * 3, (False,))
    with pytest.raises(ValueError, match="flips"):
        ObfuscationKey(2, 3, (0, 1), (False,) * 2, (False,))
    with pytest.raises(ValueError, match="decoy_values"):
        ObfuscationKey(2, 3, (0, 1), (False,) * 3, ())


def test_decoy_count_per_level() -> None:
    counts = {level: decoy_count(level, 16) for level in PRIVACY_LEVELS}
    # The settings table decides: ratio 0 means no decoys, else ceil(ratio * n).
    for level, count in counts.items():
        ratio = LEVELS[level].decoy_ratio
        assert count == (0 if ratio == 0 else math.ceil(ratio * 16)), level
    assert counts["off"] == 0
    assert counts["high"] >= 1
    assert decoy_count("standard", 16) <= decoy_count("high", 16)
    assert decoy_count("high", 1) == 0
    with pytest.raises(ValueError, match="privacy level"):
        decoy_count("secret", 4)  # type: ignore[arg-type]


def test_obfuscate_validates_its_inputs() -> None:
    ising, _, _ = portfolio()
    with pytest.raises(ValueError, match="hamming_weight"):
        obfuscate(ising, level="standard", mixer="xy")
    with pytest.raises(ValueError, match="hamming_weight"):
        obfuscate(ising, level="standard", mixer="xy", hamming_weight=9)
    with pytest.raises(ValueError, match="warm_start"):
        obfuscate(ising, level="standard", mixer="x-warm", warm_start=np.full(8, 1.5))
    with pytest.raises(ValueError, match="mixer"):
        obfuscate(ising, level="standard", mixer="qaoa")
    with pytest.raises(ValueError, match="privacy level"):
        obfuscate(ising, level="max", mixer="x")  # type: ignore[arg-type]


def test_default_randomness_is_fresh_per_call() -> None:
    ising = random_ising(12, 0)
    first = obfuscate(ising, level="standard", mixer="x")[1]
    second = obfuscate(ising, level="standard", mixer="x")[1]
    assert first.positions != second.positions or first.flips != second.flips
