"""Keyed noise: the same draw for the same variables in every job, so averaging jobs keeps it."""

from __future__ import annotations

import hashlib
import secrets
import stat
from pathlib import Path

import numpy as np
import pytest

from qhybrid.core.keyfile import KeyFileError
from qhybrid.domain.qubo import Ising
from qhybrid.proxy.keyed import NoiseKey, load_noise_key
from qhybrid.proxy.obfuscation import KEYED_SHARE, LEVELS, ObfuscationKey, _Keyed, decoy_count, obfuscate
from qhybrid.proxy.transforms import coefficient_spreads
from tests.proxy.helpers import energies, random_ising

LABELS = tuple(f"ASSET{i}" for i in range(8))


def test_draws_are_deterministic_standard_normals() -> None:
    key = NoiseKey(secrets.token_bytes(32))
    items = [f"item-{i}" for i in range(20_000)]
    draws = key.normals("field", items)
    assert np.array_equal(draws, key.normals("field", items))
    assert abs(float(draws.mean())) < 0.03 and abs(float(draws.std()) - 1.0) < 0.03
    assert abs(float(np.mean(draws**4)) - 3.0) < 0.2  # Gaussian tails, not uniform
    other = NoiseKey(secrets.token_bytes(32)).normals("field", items)
    assert abs(float(np.corrcoef(draws, other)[0, 1])) < 0.03
    assert abs(float(np.corrcoef(draws, key.normals("warm", items))[0, 1])) < 0.03
    assert abs(float(np.corrcoef(draws, key.for_tenant("desk-a").normals("field", items))[0, 1])) < 0.03
    assert repr(key) == "NoiseKey(<secret>)"


def test_a_pair_gets_its_draw_whatever_the_order_and_the_universe() -> None:
    key = NoiseKey(secrets.token_bytes(32))
    forward = key.coupling_normals(["A", "B", "C"])
    backward = key.coupling_normals(["C", "B", "A"])
    assert forward[0, 1] == backward[1, 2]  # (A, B)
    assert forward[0, 2] == backward[0, 2]  # (A, C)
    assert key.coupling_normals(["A", "X", "B"])[0, 2] == forward[0, 1]  # (A, B) in another universe
    assert np.all(np.tril(forward) == 0.0)


def sent_noise(true: Ising, sent: Ising, key: ObfuscationKey) -> tuple[np.ndarray, np.ndarray]:
    """The noise a job added, read back in the true variables' order (standard level: no decoys)."""
    positions = np.array(key.positions)
    signs = np.where(np.array(key.flips), -1.0, 1.0)[positions]
    h = sent.h[positions] * signs / key.scale
    full = sent.couplings + sent.couplings.T
    j = full[np.ix_(positions, positions)] * np.outer(signs, signs) / key.scale
    true_full = true.couplings + true.couplings.T
    iu = np.triu_indices(true.num_qubits, 1)
    return h - true.h, (j - true_full)[iu]


def test_averaging_jobs_shrinks_fresh_noise_but_not_keyed_noise() -> None:
    true = random_ising(8, seed=3)
    # A fixed key: the keyed part of one job's noise is 28 draws of one key, whose spread varies by
    # about 13 % from key to key; with a fresh random key each run the 0.7-1.3 band below failed
    # about 2 runs in 100 (measured: 3 of 150 keys), a flaky test rather than a finding.
    noise_key = NoiseKey(hashlib.sha256(b"qhybrid-test-noise-key").digest())
    rng = np.random.default_rng(5)
    _, coupling_spread = coefficient_spreads(true)
    expected = LEVELS["standard"].coupling_noise * coupling_spread
    for keyed, floor in ((False, 1 / np.sqrt(40)), (True, np.sqrt(KEYED_SHARE + (1 - KEYED_SHARE) / 40))):
        noises = []
        for _ in range(40):
            sent, key = obfuscate(
                true,
                level="standard",
                mixer="x",
                rng=rng,
                labels=LABELS if keyed else None,
                noise_key=noise_key if keyed else None,
            )
            noises.append(sent_noise(true, sent.ising, key)[1])
        single = float(np.std(noises[0]))
        averaged = float(np.std(np.mean(noises, axis=0)))
        # One job's noise is as large either way; the average of 40 keeps its size only if keyed.
        assert 0.7 * expected < single < 1.3 * expected
        assert 0.6 * floor < averaged / expected < 1.4 * floor, (keyed, averaged / expected)


def test_keyed_noise_follows_the_labels_not_the_request_order() -> None:
    true = random_ising(8, seed=7)
    noise_key = NoiseKey(secrets.token_bytes(32))
    order = np.random.default_rng(1).permutation(8)
    reordered = Ising(
        h=true.h[order],
        couplings=np.triu((true.couplings + true.couplings.T)[np.ix_(order, order)], 1),
        offset=true.offset,
    )
    labels = [LABELS[i] for i in order]
    first, first_key = obfuscate(true, level="standard", mixer="x", labels=LABELS, noise_key=noise_key)
    second, second_key = obfuscate(reordered, level="standard", mixer="x", labels=labels, noise_key=noise_key)
    h1, _ = sent_noise(true, first.ising, first_key)
    h2, _ = sent_noise(reordered, second.ising, second_key)
    # Variable order[i] of the first request is variable i of the second: keyed parts agree.
    assert float(np.corrcoef(h1[order], h2)[0, 1]) > 0.5


def test_the_same_universe_gets_the_same_twins_in_any_order() -> None:
    noise_key = NoiseKey(secrets.token_bytes(32))
    labels = [f"ASSET{i}" for i in range(16)]
    count = decoy_count("high", 16)

    def twins(names: list[str]) -> set[tuple[str, str]]:
        keyed = _Keyed.of(noise_key, names, len(names), KEYED_SHARE)
        assert keyed is not None
        templates, partners, _ = keyed.twins(count, None, 8)
        return {(names[t], names[p]) for t, p in zip(templates, partners, strict=True)}

    reference = twins(labels)
    assert len(reference) == count
    assert twins(labels) == reference
    assert twins(list(reversed(labels))) == reference
    other = NoiseKey(secrets.token_bytes(32))
    assert _Keyed.of(other, labels, 16, KEYED_SHARE) is not None
    sent, key = obfuscate(
        random_ising(16, seed=4), level="high", mixer="x", labels=labels, noise_key=noise_key
    )
    assert sent.num_qubits == 16 + count and key.num_variables == 16


def test_off_ignores_the_key() -> None:
    # "off" strips the labels only: a key and labels change nothing there.
    true = random_ising(6, seed=2)
    noise_key = NoiseKey(secrets.token_bytes(32))
    sent, key = obfuscate(true, level="off", mixer="x", labels=LABELS[:6], noise_key=noise_key)
    assert np.allclose(energies(sent.ising), energies(true))
    assert key == ObfuscationKey.identity(6)


def test_labels_must_name_every_variable_once() -> None:
    noise_key = NoiseKey(secrets.token_bytes(32))
    with pytest.raises(ValueError, match="labels"):
        obfuscate(
            random_ising(4, seed=1),
            level="standard",
            mixer="x",
            labels=["A", "A", "B", "C"],
            noise_key=noise_key,
        )
    with pytest.raises(ValueError, match="labels"):
        obfuscate(
            random_ising(4, seed=1), level="standard", mixer="x", labels=["A", "B"], noise_key=noise_key
        )


def test_the_key_file_is_made_once_private_and_refused_when_readable(tmp_path: Path) -> None:
    path = tmp_path / "proxy" / "noise-key"
    first = load_noise_key(None, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = load_noise_key(None, path)
    assert np.array_equal(first.normals("x", ["a"]), again.normals("x", ["a"]))
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        load_noise_key(None, path)
    with pytest.raises(KeyFileError, match="base64"):
        load_noise_key("not base64!", path)
