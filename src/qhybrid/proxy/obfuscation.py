"""Obfuscation of the Ising problem that leaves the trusted zone, and its inverse on samples.

What the cloud sees. The circuit text gives away the fields ``h`` and couplings ``J`` of the sent
problem up to one positive factor (the RZ/RZZ angles of each layer), the warm-start values ``c``
(the ``RY(2·asin√c)`` angles, clipped to ``[ε, 1 − ε]`` by the engine) and the number of qubits.
An attacker with public price histories can match a plain, permuted and scaled covariance matrix
to its stocks (``benchmarks/leakage.py`` re-identifies 100 % of the variables); with the budget
penalty every coupling is positive, so the signs give a spin-flip gauge away too.

What is done, in this order (each step in :mod:`qhybrid.proxy.transforms`, with its exact effect
on energies):

1. **Decoys** (``high``): extra qubits, each a twin of a real variable (a copy of
   its row of the QUBO, see :func:`~qhybrid.proxy.transforms.append_twins`), so an attacker who
   matches a row to a stock finds two candidates. A decoy at 0 changes no energy at all; decoys
   are dropped from the returned samples. Twins are made from the clean problem, before the
   noise, so a twin and its template are equally noisy and cannot be told apart by their fit.
2. **Noise**: Gaussian noise on every field and coupling (decoys included), in units of the
   spread of the real problem's fields and couplings (:func:`coefficient_spreads`). This is what
   defeats matching; its cost is sample quality, never correctness (samples are judged and
   refined on the true problem). Given the variables' labels and a :class:`~qhybrid.proxy.keyed.NoiseKey`,
   most of its variance (``keyed_share``) is *keyed*: the same draw for the same variables in
   every job of the client, so that lining up and averaging many jobs does not shrink it
   (:mod:`qhybrid.proxy.keyed`); the rest is fresh per job. The decoys' templates are then chosen
   from the universe, the same each time. Measured on real data (``docs/security.md``): with the
   default warm-start mixer the sample quality hardly moves even at the ``high`` level, because
   the warm start carries it; with the XY mixer the approximation ratio drops with the level.
3. **Subspace mask** (XY only): random row shifts and a field shift that change no energy of the
   preserved Hamming weight (:func:`~qhybrid.proxy.transforms.subspace_mask`). It removes the
   uniform budget penalty and the row sums from view at no cost.
4. **Spin flips**: for the X mixers (``"x"``, ``"x-warm"``) a random gauge, each qubit flipped with
   probability ½, and the warm start flipped with it (``c → 1 − c``, an exact symmetry of the
   warm-start circuit). For ``"xy"`` and ``"xy-warm"`` a per-qubit gauge would break the
   Hamming-weight constraint the mixer keeps, so only the global complement ``x → 1 − x`` is used
   (probability ½): the sent weight becomes ``N − B``. Note: while the budget penalty dominates
   the couplings, their signs reveal a per-qubit gauge (the leakage benchmark inverts it); the
   flips are free, so they stay.
5. **Permutation** of all qubits, real and decoy.
6. **Rescaling** by a random factor in ``[½, 2]`` and a random offset shift (invisible to the
   engine, which normalises, and to the attacker, who only sees angles; kept so that no absolute
   magnitude is ever sent).

The warm start (for ``"x-warm"`` and ``"xy-warm"``) gets the same treatment: Gaussian noise
(clipped to ``[0, 1]``) so that its fractional values cannot be matched to a recomputed
relaxation, twins take their template's clean value with their own noise, then the flips and the
permutation. ``"xy-warm"`` encodes the values in the split angles of its weighted Dicke
preparation (they can be solved back for the values, so the noise is what protects them, as
with the ``RY`` angles of ``"x-warm"``); its flips are the global complement, under which the
conditioned rounding of ``1 − c`` at weight ``N − B`` is exactly the complement of that of ``c``.
For ``"xy"`` a warm start (which only picks the starting basis state) gives decoys their
designated values.

Decoys and the XY mixer. The engine's XY mixer is one ring over all qubits, so it preserves only
the total weight: decoys cannot keep a weight of their own. Decoys are meant to be 0 (the sent
weight is ``B``, or ``N − B`` after the complement); the mixer can still swap an excitation from
a real variable to a decoy, which gives a sample whose real part has weight ``B − 1``. Such
samples are repaired by the post-processing; the sample quality measured in the benchmark
includes this cost.

``"off"`` strips the labels only (they never enter an :class:`Ising`): the numbers go out as they
are, with the identity key.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qhybrid.domain.privacy import PRIVACY_LEVELS, PrivacyLevel
from qhybrid.domain.qubo import FloatArray, Ising
from qhybrid.proxy.keyed import NoiseKey
from qhybrid.proxy.transforms import (
    add_noise,
    append_twins,
    coefficient_spreads,
    flip_spins,
    permute,
    rescale,
    sent_to_true,
    subspace_mask,
    true_to_sent,
)
from qhybrid.quantum.decode import decode_counts

#: Mixers the engine knows (:data:`qhybrid.quantum.spec.Mixer`).
MIXERS = ("x", "xy", "x-warm", "xy-warm")
#: Mixers that keep the Hamming weight: no per-qubit gauge, the subspace mask applies.
_XY_MIXERS = ("xy", "xy-warm")
#: Version of the serialised key; :meth:`ObfuscationKey.from_bytes` refuses others.
KEY_VERSION = 1


@dataclass(frozen=True)
class LevelSettings:
    """What a privacy level does.

    Attributes:
        permute: Shuffle the qubits.
        rescale: Random positive factor and offset shift.
        flips: Spin flips (per-qubit gauge for X mixers, global complement for XY).
        mask: XY only: the subspace mask (exact on the preserved weight).
        field_noise: Noise on the fields, in spreads of the real fields.
        coupling_noise: Noise on the couplings, in spreads of the real couplings.
        warm_noise: Standard deviation of the noise on the warm-start values (absolute, in [0, 1]).
        decoy_ratio: Decoys per real variable (rounded up).
        keyed_share: Share of the noise variance that is keyed (the same in every job of the
            client, :mod:`qhybrid.proxy.keyed`) when labels and a key are given; the rest is fresh.
    """

    permute: bool
    rescale: bool
    flips: bool
    mask: bool
    field_noise: float
    coupling_noise: float
    warm_noise: float
    decoy_ratio: float
    keyed_share: float = 0.0


#: Calibrated against ``benchmarks/leakage.py`` (real prices, 16 of 20 stocks) and, for the keyed
#: share, ``benchmarks/leakage_jobs.py`` (k jobs of one client); the tables are in
#: ``docs/security.md`` and ``docs/benchmarks.md``.
KEYED_SHARE = 0.9
LEVELS: Mapping[PrivacyLevel, LevelSettings] = {
    "off": LevelSettings(False, False, False, False, 0.0, 0.0, 0.0, 0.0),
    "low": LevelSettings(True, True, True, True, 0.5, 1.0, 0.02, 0.0, KEYED_SHARE),
    "standard": LevelSettings(True, True, True, True, 1.0, 6.0, 0.05, 0.0, KEYED_SHARE),
    "high": LevelSettings(True, True, True, True, 2.0, 8.0, 0.1, 0.125, KEYED_SHARE),
}


def _checked_level(level: str) -> PrivacyLevel:
    if level not in PRIVACY_LEVELS:
        choices = ", ".join(repr(name) for name in PRIVACY_LEVELS)
        raise ValueError(f"privacy level must be one of {choices}, got {level!r}")
    return level  # narrowed to the literals by the membership test


def decoy_count(level: PrivacyLevel, num_variables: int) -> int:
    """How many decoy qubits :func:`obfuscate` adds to a problem of ``num_variables`` variables.

    Cheap and deterministic, so that qubit limits can be checked before anything runs: the
    sent problem has ``num_variables + decoy_count(level, num_variables)`` qubits. Problems with
    fewer than two variables get no decoys (a twin needs a partner).

    Raises:
        ValueError: On an unknown level or a negative size.
    """
    settings = LEVELS[_checked_level(level)]
    if num_variables < 0:
        raise ValueError(f"num_variables must be >= 0, got {num_variables}")
    if num_variables < 2 or settings.decoy_ratio <= 0.0:
        return 0
    return math.ceil(settings.decoy_ratio * num_variables - 1e-9)


@dataclass(frozen=True, repr=False)
class ObfuscationKey:
    """The secret that maps sent outcomes back to the real variables. Never leaves the trusted zone.

    Attributes:
        num_variables: ``n``, real variables.
        num_qubits: ``N = n + decoys``, width of the sent register.
        positions: ``positions[i]`` is the sent qubit that carries real variable ``i``; the other
            qubits are decoys.
        flips: One per sent qubit: the sent bit is the real bit XOR this.
        decoy_values: The designated value of each decoy (before its flip), in the order of
            :attr:`decoy_positions`. With the decoys at these values the sent energy of any real
            ``x`` is ``scale·(E_true(x) + noise(x) + C) + shift`` for a constant ``C``.
        scale: ``a > 0`` in the relation above.
        shift: See ``scale``.
        level: The privacy level used.
    """

    num_variables: int
    num_qubits: int
    positions: tuple[int, ...]
    flips: tuple[bool, ...]
    decoy_values: tuple[bool, ...] = ()
    scale: float = 1.0
    shift: float = 0.0
    level: PrivacyLevel = "off"

    def __post_init__(self) -> None:
        n, total = self.num_variables, self.num_qubits
        if not 0 <= n <= total:
            raise ValueError(f"need 0 <= num_variables <= num_qubits, got {n} and {total}")
        if len(self.positions) != n or len(set(self.positions)) != n:
            raise ValueError("positions must hold one distinct qubit per real variable")
        if any(not 0 <= p < total for p in self.positions):
            raise ValueError(f"positions must be qubits 0..{total - 1}")
        if len(self.flips) != total:
            raise ValueError(f"flips must hold one entry per qubit ({total})")
        if len(self.decoy_values) != total - n:
            raise ValueError(f"decoy_values must hold one entry per decoy ({total - n})")
        if not (self.scale > 0.0 and math.isfinite(self.scale) and math.isfinite(self.shift)):
            raise ValueError("scale must be positive and finite, shift finite")
        _checked_level(self.level)
        object.__setattr__(self, "positions", tuple(int(p) for p in self.positions))
        object.__setattr__(self, "flips", tuple(bool(f) for f in self.flips))
        object.__setattr__(self, "decoy_values", tuple(bool(v) for v in self.decoy_values))

    def __repr__(self) -> str:
        # Logs and tracebacks must not reveal the permutation, the flips or even the sizes.
        return "ObfuscationKey(<secret>)"

    __str__ = __repr__

    @classmethod
    def identity(cls, num_variables: int) -> ObfuscationKey:
        """The key of ``"off"``: every variable on its own qubit, nothing flipped."""
        return cls(num_variables, num_variables, tuple(range(num_variables)), (False,) * num_variables)

    @property
    def decoy_positions(self) -> tuple[int, ...]:
        """The sent qubits that carry decoys, in increasing order."""
        real = set(self.positions)
        return tuple(k for k in range(self.num_qubits) if k not in real)

    def true_bits(self, sent: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Sent bit vectors ``(m, num_qubits)`` (or one) to the real variables ``(m, num_variables)``."""
        rows = np.atleast_2d(np.asarray(sent, dtype=np.uint8))
        if rows.shape[1] != self.num_qubits:
            raise ValueError(f"sent bit vectors must have {self.num_qubits} entries, got {rows.shape[1]}")
        return sent_to_true(rows, np.array(self.positions), np.array(self.flips))

    def sent_bits(
        self, true: NDArray[np.uint8], decoy_bits: NDArray[np.uint8] | None = None
    ) -> NDArray[np.uint8]:
        """Real bit vectors ``(m, num_variables)`` to the sent ones that carry them.

        Decoys take ``decoy_bits`` (before their flips, in the order of :attr:`decoy_positions`),
        by default their designated :attr:`decoy_values`.
        """
        rows = np.atleast_2d(np.asarray(true, dtype=np.uint8))
        if rows.shape[1] != self.num_variables:
            raise ValueError(f"bit vectors must have {self.num_variables} entries, got {rows.shape[1]}")
        if decoy_bits is None:
            decoy_bits = np.array(self.decoy_values, dtype=np.uint8)
        return true_to_sent(rows, np.array(self.positions), np.array(self.flips), decoy_bits)

    def to_bytes(self) -> bytes:
        """Compact JSON (seal it with :class:`qhybrid.proxy.keys.KeyVault` before storing it)."""
        document = {
            "version": KEY_VERSION,
            "num_variables": self.num_variables,
            "num_qubits": self.num_qubits,
            "positions": list(self.positions),
            "flips": [int(f) for f in self.flips],
            "decoy_values": [int(v) for v in self.decoy_values],
            "scale": self.scale,
            "shift": self.shift,
            "level": self.level,
        }
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> ObfuscationKey:
        """Parse :meth:`to_bytes`.

        Raises:
            ValueError: On anything that is not a valid key of this version.
        """
        try:
            document: Any = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError("not a serialised obfuscation key") from error
        if not isinstance(document, dict) or document.get("version") != KEY_VERSION:
            raise ValueError("not a serialised obfuscation key of a known version")
        try:
            positions = document["positions"]
            flips = document["flips"]
            decoys = document["decoy_values"]
            if not isinstance(positions, list) or not all(type(p) is int for p in positions):
                raise ValueError("positions must be a list of integers")
            for name, bits in (("flips", flips), ("decoy_values", decoys)):
                if not isinstance(bits, list) or not all(type(f) is int and f in (0, 1) for f in bits):
                    raise ValueError(f"{name} must be a list of 0/1")
            return cls(
                num_variables=int(document["num_variables"]),
                num_qubits=int(document["num_qubits"]),
                positions=tuple(positions),
                flips=tuple(bool(f) for f in flips),
                decoy_values=tuple(bool(v) for v in decoys),
                scale=float(document["scale"]),
                shift=float(document["shift"]),
                level=_checked_level(str(document["level"])),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"incomplete obfuscation key ({type(error).__name__})") from error


@dataclass(frozen=True)
class ObfuscatedProblem:
    """What goes into the QAOA planning and the circuit.

    Attributes:
        ising: The sent problem over ``num_qubits`` qubits.
        hamming_weight: The weight the XY mixer must keep in the sent basis (``None`` if none
            was given).
        warm_start: The sent warm start (``None`` if none was given).
        num_qubits: Width of the sent register.
    """

    ising: Ising
    hamming_weight: int | None
    warm_start: FloatArray | None
    num_qubits: int


def _default_rng() -> np.random.Generator:
    # 128 bits from the OS's CSPRNG: the permutation, flips and noise must not be guessable.
    return np.random.default_rng(secrets.randbits(128))


def obfuscate(
    ising: Ising,
    *,
    level: PrivacyLevel = "standard",
    mixer: str,
    hamming_weight: int | None = None,
    warm_start: FloatArray | None = None,
    rng: np.random.Generator | None = None,
    labels: Sequence[str] | None = None,
    noise_key: NoiseKey | None = None,
) -> tuple[ObfuscatedProblem, ObfuscationKey]:
    """Turn the real problem into the one sent out, and return the key that inverts it.

    Args:
        ising: The real problem (variable ``i`` is the formulation's variable ``i``).
        level: See :data:`LEVELS` and the module docstring.
        mixer: ``"x"``, ``"xy"``, ``"x-warm"`` or ``"xy-warm"``: decides which spin flips keep the
            problem solvable (per-qubit for X mixers, global complement for XY) and whether the
            subspace mask applies.
        hamming_weight: ``B``, required for ``"xy"`` and ``"xy-warm"``.
        warm_start: The relaxed solution, ``n`` values in ``[0, 1]`` (``"x-warm"`` and
            ``"xy-warm"``; optional for ``"xy"``).
        rng: Randomness for tests and benchmarks; by default a generator seeded from
            :mod:`secrets`.
        labels: The variables' identities (asset names, lot bits), unique, one per variable:
            with ``noise_key``, the keyed noise and the decoys' templates follow them.
        noise_key: The client's noise key; without it (or without labels) all noise is fresh.

    Returns:
        ``(problem, key)``.

    Raises:
        ValueError: On an unknown level or mixer, a missing or out-of-range Hamming weight for
            ``"xy"``, or a warm start of the wrong shape or outside ``[0, 1]``.
    """
    settings = LEVELS[_checked_level(level)]
    if mixer not in MIXERS:
        raise ValueError(f"mixer must be one of {', '.join(MIXERS)}, got {mixer!r}")
    n = ising.num_qubits
    weight = _checked_weight(hamming_weight, n, required=mixer in _XY_MIXERS)
    warm = _checked_warm_start(warm_start, n)
    if level == "off":
        return ObfuscatedProblem(ising, weight, warm, n), ObfuscationKey.identity(n)
    generator = rng if rng is not None else _default_rng()
    keyed = _Keyed.of(noise_key, labels, n, settings.keyed_share)
    # The steps draw from the generator in a fixed order: a seeded run must give the same problem.
    decoys = decoy_count(level, n)
    total = n + decoys
    if keyed is None:
        templates, partners, active = _choose_twins(generator, n, decoys, warm, weight)
    else:
        templates, partners, active = keyed.twins(decoys, warm, weight)
    sent = append_twins(ising, templates, partners, active)
    spreads = coefficient_spreads(ising)
    sent = _with_noise(
        sent, settings, spreads, generator, None if keyed is None else keyed.fields_and_couplings(templates)
    )
    sent_weight = None if weight is None else weight + int(active.sum())
    sent, flips, sent_weight = _mask_and_flip(sent, mixer, sent_weight, settings, spreads, generator)
    # Internal index k (reals 0..n-1, then decoys) goes to qubit order[k].
    order = generator.permutation(total) if settings.permute else np.arange(total)
    sent = permute(sent, order)
    sent, factor, shift = _rescaled(sent, ising, settings, generator)
    sent_warm = None
    if warm is not None:
        keyed_warm = None if keyed is None else keyed.warm(templates)
        sent_warm = _sent_warm_start(
            warm,
            templates,
            active,
            flips,
            order,
            mixer,
            settings.warm_noise,
            generator,
            keyed_warm,
            settings.keyed_share,
        )
    key = _key(level, n, order, flips, active, factor, shift)
    return ObfuscatedProblem(sent, sent_weight, sent_warm, total), key


@dataclass(frozen=True)
class _Keyed:
    """Keyed draws for one problem: its labels, the client's key, the keyed share of the variance."""

    key: NoiseKey
    labels: tuple[str, ...]
    share: float

    @classmethod
    def of(cls, key: NoiseKey | None, labels: Sequence[str] | None, n: int, share: float) -> _Keyed | None:
        if key is None or labels is None or share <= 0.0:
            return None
        names = tuple(str(label) for label in labels)
        if len(names) != n or len(set(names)) != n:
            raise ValueError(f"labels must name the {n} variables, each once")
        return cls(key, names, share)

    def extended(self, templates: NDArray[np.int64]) -> list[str]:
        """Labels of the real variables, then of each twin (after its template and its round)."""
        n = len(self.labels)
        twins = [f"twin{k // n}:{self.labels[t]}" for k, t in enumerate(templates)]
        return [*self.labels, *twins]

    def twins(
        self, count: int, warm: FloatArray | None, weight: int | None
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
        """The decoys of this universe, the same whatever the request's order.

        Drawn in the labels' sorted order from the universe's own generator.
        """
        n = len(self.labels)
        canonical = np.argsort(np.array(self.labels, dtype=object), kind="stable").astype(np.int64)
        templates, partners, active = _choose_twins(
            self.key.universe_rng(self.labels), n, count, None, weight
        )
        templates, partners = canonical[templates], canonical[partners]
        if warm is not None:
            active = warm[templates] >= 0.5
        return templates, partners, active

    def fields_and_couplings(self, templates: NDArray[np.int64]) -> tuple[FloatArray, FloatArray]:
        """Keyed standard normals for every field and coupling of the problem with its twins."""
        labels = self.extended(templates)
        return self.key.field_normals(labels), self.key.coupling_normals(labels)

    def warm(self, templates: NDArray[np.int64]) -> FloatArray:
        """Keyed standard normals for every warm-start value."""
        return self.key.warm_normals(self.extended(templates))


def _choose_twins(
    rng: np.random.Generator, n: int, count: int, warm: FloatArray | None, weight: int | None
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
    """Decoys: ``(templates, partners, active)`` for :func:`~qhybrid.proxy.transforms.append_twins`."""
    templates = _spread_choice(rng, n, count)
    partners = (templates + rng.integers(1, n, size=count)) % n if count else templates
    # A twin is held when its template is likely held (the warm start says so); without a warm
    # start, with the density of the budget.
    if warm is not None:
        active = warm[templates] >= 0.5
    else:
        density = 0.5 if weight is None else weight / n
        active = rng.random(count) < density
    return templates, partners, active


def _with_noise(
    sent: Ising,
    settings: LevelSettings,
    spreads: tuple[float, float],
    rng: np.random.Generator,
    keyed: tuple[FloatArray, FloatArray] | None = None,
) -> Ising:
    """Noise on everything, decoys included, in units of the real problem's spreads.

    With ``keyed`` draws, ``keyed_share`` of the variance is theirs and the rest fresh, so that a
    single job's noise has the same size either way.
    """
    field_spread, coupling_spread = spreads
    fresh = 1.0 if keyed is None else math.sqrt(1.0 - settings.keyed_share)
    noisy, _ = add_noise(
        sent,
        rng,
        fresh * settings.field_noise * field_spread,
        fresh * settings.coupling_noise * coupling_spread,
    )
    if keyed is None:
        return noisy
    weight = math.sqrt(settings.keyed_share)
    keyed_h, keyed_j = keyed
    return Ising(
        h=noisy.h + weight * settings.field_noise * field_spread * keyed_h,
        couplings=noisy.couplings + weight * settings.coupling_noise * coupling_spread * keyed_j,
        offset=noisy.offset,
    )


def _mask_and_flip(
    sent: Ising,
    mixer: str,
    sent_weight: int | None,
    settings: LevelSettings,
    spreads: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[Ising, NDArray[np.bool_], int | None]:
    """The subspace mask (XY only) and the spin flips the mixer allows.

    Returns:
        ``(problem, flips, weight)``: the flipped problem, one flip per internal qubit, and the
        Hamming weight the XY mixer must keep once the flips are applied.
    """
    total = sent.num_qubits
    if mixer not in _XY_MIXERS:
        flips = rng.random(total) < 0.5 if settings.flips else np.zeros(total, dtype=np.bool_)
        return flip_spins(sent, flips), flips, sent_weight
    assert sent_weight is not None
    if settings.mask:
        field_spread, coupling_spread = spreads
        sent = _masked(sent, sent_weight, coupling_spread, field_spread, rng)
    # A per-qubit gauge would break the weight the XY mixer keeps; the global complement does not.
    complement = settings.flips and bool(rng.random() < 0.5)
    flips = np.full(total, complement)
    if complement:
        sent_weight = total - sent_weight
    return flip_spins(sent, flips), flips, sent_weight


def _rescaled(
    sent: Ising, ising: Ising, settings: LevelSettings, rng: np.random.Generator
) -> tuple[Ising, float, float]:
    """Scale and shift by random amounts, so that no absolute magnitude is sent: ``(problem, a, shift)``."""
    if not settings.rescale:
        return sent, 1.0, 0.0
    factor = float(2.0 ** rng.uniform(-1.0, 1.0))
    shift = float(rng.normal(0.0, 1.0)) * max(abs(ising.offset), ising.scale())
    return rescale(sent, factor, shift), factor, shift


def _key(
    level: PrivacyLevel,
    n: int,
    order: NDArray[np.int64],
    flips: NDArray[np.bool_],
    active: NDArray[np.bool_],
    scale: float,
    shift: float,
) -> ObfuscationKey:
    """The key that undoes the flips and the permutation.

    Internal qubit ``k`` (reals ``0..n-1``, then decoys) was flipped by ``flips[k]`` and sent as
    qubit ``order[k]``.
    """
    total = order.size
    sent_flips = np.empty(total, dtype=np.bool_)
    sent_flips[order] = flips
    # Decoy qubits in increasing order, and the internal decoy each one carries.
    decoy_qubits = np.sort(order[n:])
    internal_of = np.empty(total, dtype=np.int64)
    internal_of[order] = np.arange(total)
    return ObfuscationKey(
        num_variables=n,
        num_qubits=total,
        positions=tuple(int(q) for q in order[:n]),
        flips=tuple(bool(f) for f in sent_flips),
        decoy_values=tuple(bool(active[internal_of[q] - n]) for q in decoy_qubits),
        scale=scale,
        shift=shift,
        level=level,
    )


def _checked_weight(hamming_weight: int | None, n: int, *, required: bool) -> int | None:
    if hamming_weight is None:
        if required:
            raise ValueError("mixer 'xy' needs the hamming_weight B it preserves")
        return None
    if isinstance(hamming_weight, bool) or int(hamming_weight) != hamming_weight:
        raise ValueError(f"hamming_weight must be an integer, got {hamming_weight!r}")
    if not 0 <= int(hamming_weight) <= n:
        raise ValueError(f"hamming_weight must be in 0..{n}, got {hamming_weight}")
    return int(hamming_weight)


def _checked_warm_start(warm_start: FloatArray | None, n: int) -> FloatArray | None:
    if warm_start is None:
        return None
    values = np.array(warm_start, dtype=np.float64)
    if values.shape != (n,) or not np.all(np.isfinite(values)) or np.any((values < 0.0) | (values > 1.0)):
        raise ValueError(f"warm_start must hold {n} numbers in [0, 1], got shape {values.shape}")
    return values


def _spread_choice(rng: np.random.Generator, n: int, count: int) -> NDArray[np.int64]:
    """``count`` templates: each real variable at most once until all have been used."""
    rounds = [rng.permutation(n) for _ in range(-(-count // n))] if count else []
    chosen = np.concatenate(rounds)[:count] if rounds else np.zeros(0)
    return np.asarray(chosen, dtype=np.int64)


def _masked(
    ising: Ising, weight: int, coupling_spread: float, field_spread: float, rng: np.random.Generator
) -> Ising:
    """The XY subspace mask with random shifts.

    The row shifts' common part cancels the mean coupling (the uniform budget penalty) up to a
    random remainder, and their spread is a few coupling spreads, which scrambles the row sums;
    the field shift hides the fields' mean. None of it changes an energy the mixer can reach.
    """
    n = ising.num_qubits
    upper = ising.couplings[np.triu_indices(n, k=1)]
    mean = float(upper.mean()) if upper.size else 0.0
    rows = -mean / 2.0 + coupling_spread * (rng.normal(0.0, 1.0) + 2.0 * rng.normal(0.0, 1.0, size=n))
    field = float(rng.normal(0.0, 1.0)) * field_spread * 2.0
    return subspace_mask(ising, weight, rows, field)


def _sent_warm_start(
    warm: FloatArray,
    templates: NDArray[np.int64],
    active: NDArray[np.bool_],
    flips: NDArray[np.bool_],
    order: NDArray[np.int64],
    mixer: str,
    noise: float,
    rng: np.random.Generator,
    keyed: FloatArray | None = None,
    keyed_share: float = 0.0,
) -> FloatArray:
    """The warm start in the sent basis: noise, twins, flips, permutation (see the module docstring).

    With ``keyed`` draws, ``keyed_share`` of the noise variance is theirs.
    """
    n = warm.size
    if mixer == "xy":
        # XY only uses the warm start to pick its starting basis state (the largest values):
        # decoys start at their designated values.
        internal = np.concatenate([warm, active.astype(np.float64)])
    else:
        internal = np.concatenate([warm, warm[templates]])
        draws = rng.normal(0.0, 1.0, size=internal.size)
        if keyed is not None:
            draws = math.sqrt(1.0 - keyed_share) * draws + math.sqrt(keyed_share) * keyed
        internal = internal + draws * noise
    internal = np.clip(internal, 0.0, 1.0)
    internal = np.where(flips, 1.0 - internal, internal)
    sent = np.empty(n + templates.size, dtype=np.float64)
    sent[order] = internal
    return sent


def deobfuscate_counts(counts: Mapping[str, int], key: ObfuscationKey) -> dict[str, int]:
    """Outcomes of the sent register to outcomes over the real variables.

    Keys are bit strings with bit 0 first (the backend contract), width ``key.num_qubits``; the
    result's keys have width ``key.num_variables``. Decoys are dropped, flips undone and the
    permutation undone; outcomes that become equal are merged, so the total is preserved.
    Outcomes with a zero count are dropped.

    Raises:
        ValueError: On a key of the wrong width or with characters other than ``0``/``1``, or a
            negative or non-integer count.
    """
    sent, values = decode_counts(counts, key.num_qubits)  # validates every outcome and count
    true = key.true_bits(sent) + ord("0")
    merged: dict[str, int] = {}
    for row, value in zip(true, values.tolist(), strict=True):
        outcome = row.tobytes().decode("ascii")
        merged[outcome] = merged.get(outcome, 0) + value
    return merged
