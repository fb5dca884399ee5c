"""Re-identification attacks on the obfuscated problems of real portfolios, and what obfuscation costs.

Setup of a trial (seeded): N of the 20 stocks of ``load_sp500()`` in a random order (the client's
order), a window of 252/504/756/1260 trading days ending at one of the last 120 month ends,
Ledoit-Wolf ``Σ`` and the mean ``μ`` of simple returns (as the service estimates them), the
balanced risk aversion, budget ``N/2``, then the QUBO and Ising problem exactly as the service
builds them, obfuscated by :func:`qhybrid.proxy.obfuscation.obfuscate` at each privacy level.

The attacker gets only what crosses the boundary — the sent fields and couplings times an
unknown positive factor, the warm start as the circuit encodes it (clipped to ``[0.1, 0.9]``),
the number of qubits and the Hamming weight of the XY start state — plus public knowledge: the
whole price history of the 20 candidate stocks, the usual estimators (sample and Ledoit-Wolf,
simple and log returns, windows of 252/504/756/1260 days, ending at the job's submission month
or the month before, which the cloud sees), the service's formulation (Markowitz plus budget
penalty, balanced risk aversion by default) and the obfuscation algorithm with its parameters,
including the number of decoys (Kerckhoffs). It labels every sent qubit with a ticker or
"decoy". Attacks:

* ``match`` — (a)+(b)+(c): gauge inversion from the coupling signs (the uniform budget penalty
  makes ``sign(J_ij) = s_i s_j``), both global complements, then for every dictionary estimate a
  graph matching of the scaled QUBO against the candidate covariance (scipy's FAQ quadratic
  assignment, several starts) refined by a local search on the least-squares fit of the whole
  model: off-diagonal ``a·Σ + b``, diagonal ``α·Σ_ii + β·μ_i + κ``, plus the per-qubit row
  shifts of the XY mask when the mixer is XY. The best fit over estimates wins.
* ``signature`` — (d): permutation-invariant per-qubit signatures (diagonal, mean coupling,
  quantiles of the coupling row) matched to the stocks' by linear assignment.
* ``match+warm`` — (e): ``match`` with the warm start as extra evidence: the attacker recomputes
  the relaxation of the guessed portfolio (risk aversion ``q = −α/β`` from its fit) and refines
  the assignment on both.
* ``warm`` — (e): the warm start alone against the relaxation of all 20 stocks.

Re-identification rate: share of real variables whose qubit got the right ticker; ``chance`` is a
random labelling (1/20). ``control`` is the positive control: permutation and scale only, no noise
(must be ≥ 90 %, else the attacker is broken). Quality: the sent problem is planned and simulated
with the real engine (no cloud), its exact output distribution is mapped back to the real
variables with the key (approximation ratio over feasible portfolios, P(optimum)), 4096 shots are
drawn, de-obfuscated with :func:`deobfuscate_counts` and post-processed on the true problem as a
job is; ``gap`` is the returned portfolio's objective against the non-obfuscated run's.

Run: ``.venv/bin/python -m benchmarks.leakage [--trials 20] [--assets 16] [--mixers x-warm xy xy-warm]
[--jobs 2]``
(trials run in ``--jobs`` processes, one per core by default; about 4 minutes per trial and
mixer on one core of the 2-core machine of ``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment, lsq_linear, quadratic_assignment

from benchmarks.report import machine, markdown_header, markdown_row
from qhybrid.domain.privacy import PRIVACY_LEVELS, PrivacyLevel
from qhybrid.domain.qubo import FloatArray, Ising
from qhybrid.jobs.pipeline import default_reps
from qhybrid.portfolio.baselines import exact, objective_range
from qhybrid.portfolio.data import balanced_risk_aversion, estimate, load_sp500
from qhybrid.portfolio.postprocess import postprocess
from qhybrid.portfolio.selection import SelectionProblem
from qhybrid.proxy.obfuscation import (
    LEVELS,
    ObfuscatedProblem,
    ObfuscationKey,
    decoy_count,
    deobfuscate_counts,
    obfuscate,
)
from qhybrid.quantum.decode import decode_counts
from qhybrid.quantum.engine import final_distribution, plan_qaoa
from qhybrid.quantum.spec import WARM_MIXERS, XY_MIXERS, QaoaSpec

IntArray = NDArray[np.int64]

WINDOWS = (252, 504, 756, 1260)
#: Trading days between month ends; trials end at one of the last ``END_CHOICES`` of them.
MONTH = 21
END_CHOICES = 120
SHOTS = 4096
#: What the circuit reveals of the warm start: the engine clips it to [ε, 1 − ε], ε = 0.1.
WARM_EPSILON = 0.1
#: Pseudo-level of the positive control: permutation and scale, nothing else.
CONTROL = "control"
DECOY = -1


# --------------------------------------------------------------------------------------- trials


@dataclass(frozen=True)
class Trial:
    """One real instance.

    Attributes:
        problem: The portfolio problem the service would solve.
        tickers: Ticker index (into ``load_sp500()``) of each real variable.
        end: Last price row (exclusive) of the estimation window.
        ising: The Ising problem of the penalised QUBO, as the service builds it.
        warm_start: The continuous relaxation (the ``x-warm`` start).
    """

    problem: SelectionProblem
    tickers: IntArray
    end: int
    ising: Ising
    warm_start: FloatArray


def make_trial(seed: int, num_assets: int) -> Trial:
    """The seeded instance ``seed`` with ``num_assets`` of the 20 stocks and budget ``N/2``."""
    names, prices, _ = load_sp500()
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(names), size=num_assets, replace=False)
    window = int(rng.choice(WINDOWS))
    end = prices.shape[0] - MONTH * int(rng.integers(0, END_CHOICES))
    fit = estimate(prices[end - window : end, chosen], estimator="ledoit_wolf", returns="simple")
    budget = num_assets // 2
    risk = balanced_risk_aversion(fit.expected_returns, fit.covariance, budget)
    problem = SelectionProblem(
        tuple(names[i] for i in chosen), fit.expected_returns, fit.covariance, risk, budget
    )
    qubo, _ = problem.to_qubo()
    return Trial(problem, chosen.astype(np.int64), end, qubo.to_ising(), problem.relaxation())


@dataclass(frozen=True)
class Candidate:
    """One public estimate of all 20 stocks."""

    covariance: FloatArray
    mean: FloatArray
    label: str


@functools.cache
def dictionary(end: int) -> tuple[Candidate, ...]:
    """The attacker's estimates for a job submitted at ``end``: 2 ends × 4 windows × 2 return kinds.

    Only Ledoit-Wolf estimates are listed, yet the sample estimator is covered too: on the same
    window the two differ by a factor on the off-diagonal and an affine map on the diagonal
    (``(1 − δ)·S + δ·tr(S)/p·I``), which the attacker's model fits anyway.
    """
    _, prices, _ = load_sp500()
    out: list[Candidate] = []
    for last in (end, end - MONTH):
        for window in WINDOWS:
            for kind in ("simple", "log"):
                fit = estimate(prices[last - window : last], estimator="ledoit_wolf", returns=kind)
                out.append(Candidate(fit.covariance, fit.expected_returns, f"{kind}/{window}@{last}"))
    return tuple(out)


# ----------------------------------------------------------------------------- the observation


@dataclass(frozen=True)
class SentView:
    """What the cloud sees, and what the attacker knows of the scheme.

    Attributes:
        h: Sent fields times an unknown positive factor.
        couplings: Sent couplings (upper triangle), same factor.
        warm_start: Sent warm start as encoded in the circuit (clipped), or ``None``.
        hamming_weight: Weight of the XY start state, or ``None``.
        mixer: The QAOA mixer (visible from the gates).
        num_decoys: How many qubits are decoys (the attacker knows the algorithm).
        warm_noise: The scheme's warm-start noise (known to the attacker).
    """

    h: FloatArray
    couplings: FloatArray
    warm_start: FloatArray | None
    hamming_weight: int | None
    mixer: str
    num_decoys: int
    warm_noise: float

    @property
    def num_qubits(self) -> int:
        """Width of the sent register."""
        return int(self.h.size)


def observe(sent: ObfuscatedProblem, mixer: str, level: str, rng: np.random.Generator) -> SentView:
    """What leaves the trusted zone for ``sent``: coefficients up to a random positive factor."""
    factor = float(np.exp(rng.normal()))
    warm = None
    if sent.warm_start is not None:
        warm = np.clip(sent.warm_start, WARM_EPSILON, 1.0 - WARM_EPSILON)
    real = sent.num_qubits - (0 if level == CONTROL else _decoys_of(level, sent.num_qubits))
    return SentView(
        h=factor * sent.ising.h,
        couplings=factor * sent.ising.couplings,
        warm_start=warm,
        hamming_weight=sent.hamming_weight if mixer in XY_MIXERS else None,
        mixer=mixer,
        num_decoys=sent.num_qubits - real,
        warm_noise=0.0 if level == CONTROL else LEVELS[level].warm_noise,  # type: ignore[index]
    )


def _decoys_of(level: str, num_qubits: int) -> int:
    """Invert ``N = n + decoy_count(level, n)`` as the attacker would."""
    for n in range(num_qubits, -1, -1):
        if n + decoy_count(level, n) == num_qubits:  # type: ignore[arg-type]
            return num_qubits - n
    raise ValueError(f"no size gives {num_qubits} qubits at level {level}")


def obfuscate_for(
    trial: Trial, level: str, mixer: str, rng: np.random.Generator
) -> tuple[ObfuscatedProblem, ObfuscationKey]:
    """The service's obfuscation at ``level``, or the positive control (permute and scale only)."""
    weight = trial.problem.budget if mixer in XY_MIXERS else None
    warm = trial.warm_start if mixer in WARM_MIXERS else None
    if level != CONTROL:
        return obfuscate(
            trial.ising,
            level=cast(PrivacyLevel, level),
            mixer=mixer,
            hamming_weight=weight,
            warm_start=warm,
            rng=rng,
        )
    n = trial.ising.num_qubits
    order = rng.permutation(n)
    h = np.empty(n)
    h[order] = trial.ising.h
    full = trial.ising.couplings + trial.ising.couplings.T
    moved = np.empty_like(full)
    moved[np.ix_(order, order)] = full
    sent_warm = None
    if warm is not None:
        sent_warm = np.empty(n)
        sent_warm[order] = warm
    key = ObfuscationKey(n, n, tuple(int(q) for q in order), (False,) * n)
    return ObfuscatedProblem(Ising(h, np.triu(moved, 1), 0.0), weight, sent_warm, n), key


# ------------------------------------------------------------------------------------ attacker


@dataclass
class Hypothesis:
    """One reading of the sent problem in the QUBO domain, after undoing the guessed gauge.

    Attributes:
        offdiag: ``Q`` without its diagonal (``Q_ij = 2 J_ij``).
        fields: ``−2h``, which in the QUBO domain is ``Q_ii + Σ_j Q_ij``: the attacker explains it
            with the model's diagonal plus its own predictions of the couplings, so noise on the
            sent couplings does not blur this per-qubit evidence.
        warm: The warm start in the same gauge, or ``None``.
        masked: Whether per-qubit row shifts (the XY mask) are in the model.
        weight: The preserved Hamming weight the mask depends on.
        active: Per qubit, whether it would be a held twin if it were a decoy (its warm value is
            high): held twins shift the real diagonals by their couplings, which the attacker
            adds back.
    """

    offdiag: FloatArray
    fields: FloatArray
    warm: FloatArray | None
    masked: bool
    weight: int
    active: FloatArray


def hypotheses(view: SentView) -> list[Hypothesis]:
    """Gauge inversion (attack c) and both global complements."""
    n = view.num_qubits
    full = view.couplings + view.couplings.T
    h = view.h.copy()
    warm = None if view.warm_start is None else view.warm_start.copy()
    if view.mixer not in XY_MIXERS:
        # The budget penalty makes every true coupling positive: sign(J_ij) = s_i s_j, so the
        # leading eigenvector of the sign matrix gives the gauge s back (up to a global sign).
        _, vectors = np.linalg.eigh(np.sign(full))
        signs = np.where(vectors[:, -1] >= 0.0, 1.0, -1.0)
        full = full * np.outer(signs, signs)
        h = h * signs
        if warm is not None:
            warm = np.where(signs < 0.0, 1.0 - warm, warm)
    # The XY mask removes the dominant positive mean of the couplings (the budget penalty) and
    # adds row shifts; without it the mean dwarfs the spread. The attacker models the shifts
    # only when the mean gives the mask away (modelling them costs it the row sums).
    upper = full[np.triu_indices(n, 1)]
    masked = view.mixer in XY_MIXERS and not abs(float(upper.mean())) > 3.0 * float(upper.std())
    out: list[Hypothesis] = []
    for sign in (1.0, -1.0):
        flipped = None if warm is None else (warm if sign > 0 else 1.0 - warm)
        weight = view.hamming_weight if view.hamming_weight is not None else n // 2
        active = np.zeros(n) if flipped is None else (flipped >= 0.5).astype(np.float64)
        out.append(
            Hypothesis(
                2.0 * full, -2.0 * sign * h, flipped, masked, weight if sign > 0 else n - weight, active
            )
        )
    return out


@dataclass
class Fit:
    """Least-squares parameters of the model for one assignment, and its cost."""

    a: float
    b: float
    alpha: float
    beta: float
    kappa: float
    omega: FloatArray
    cost: float = 0.0


@dataclass
class Problem:
    """One (hypothesis, candidate) matching problem.

    The model, for real qubits ``i ≠ j`` with tickers ``t = g_i``, ``u = g_j``:
    ``Q_ij = a·Σ_tu + b (+ (ω_i + ω_j)/2)`` and ``−2h_i (+ held-twin correction) = α·Σ_tt + β·μ_t
    + κ + Σ_{j real} (a·Σ_tu + b) (+ mask terms)``, fitted by least squares, each block weighted
    by the inverse variance of what it explains.
    """

    hyp: Hypothesis
    cand: Candidate
    num_decoys: int
    warm_target: FloatArray | None = None  # predicted warm start per ticker (NaN: unknown)
    warm_scale: float = 0.05
    vo: float = field(init=False)
    vf: float = field(init=False)
    _data_vo: float = field(init=False)
    _data_vf: float = field(init=False)

    def __post_init__(self) -> None:
        n = self.hyp.fields.size
        upper = self.hyp.offdiag[np.triu_indices(n, 1)]
        self.vo = float(upper.var()) or 1.0
        self.vf = float(self.hyp.fields.var()) or 1.0
        self._data_vo, self._data_vf = self.vo, self.vf

    def node_targets(self, g: IntArray) -> FloatArray:
        """``−2h`` minus the couplings to the decoys, plus back the held twins' shifts."""
        decoy = g < 0
        weights = np.where(decoy, 2.0 * self.hyp.active - 1.0, 0.0)
        return np.asarray(self.hyp.fields + self.hyp.offdiag @ weights, dtype=np.float64)

    def _mask_columns(self, g: IntArray) -> tuple[FloatArray, FloatArray]:
        """Mask coefficients of ω: per pair row ``(e_i + e_j)/2``, per node row as derived."""
        n = g.size
        real = np.flatnonzero(g >= 0)
        iu = np.triu_indices(real.size, 1)
        i, j = real[iu[0]], real[iu[1]]
        pairs = np.zeros((i.size, n))
        pairs[np.arange(i.size), i] = 0.5
        pairs[np.arange(i.size), j] = 0.5
        nodes = np.zeros((real.size, n))
        nodes[:, real] = 0.5
        nodes[np.arange(real.size), real] = (1.0 - self.hyp.weight) + 0.5 * (real.size - 1)
        return pairs, nodes

    def fit(self, g: IntArray) -> Fit:
        """Least squares of the model for the assignment ``g`` (ticker per qubit, −1 decoy)."""
        hyp, s, mu = self.hyp, self.cand.covariance, self.cand.mean
        real = np.flatnonzero(g >= 0)
        iu = np.triu_indices(real.size, 1)
        i, j = real[iu[0]], real[iu[1]]
        t = g[real]
        sub = s[np.ix_(t, t)]
        so, sf = np.sqrt(self.vo), np.sqrt(self.vf)
        rows_o = np.column_stack([s[g[i], g[j]], np.ones(i.size), np.zeros((i.size, 3))])
        rows_n = np.column_stack(
            [
                sub.sum(axis=1) - np.diag(sub),
                np.full(real.size, real.size - 1.0),
                np.diag(sub),
                mu[t],
                np.ones(real.size),
            ]
        )
        if hyp.masked:
            pairs, nodes = self._mask_columns(g)
            rows_o = np.hstack([rows_o, pairs])
            rows_n = np.hstack([rows_n, nodes])
        design = np.vstack([rows_o / so, rows_n / sf])
        target = np.concatenate([hyp.offdiag[i, j] / so, self.node_targets(g)[real] / sf])
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        if coef[0] < 0.0 or coef[2] < 0.0 or coef[3] > 0.0:
            # The formulation fixes the signs: a = γq/… > 0 (a covariance scale), α ∝ q > 0 and
            # β ∝ −1 < 0 (returns lower the cost). A wrong sign is a wrong match; fit within them.
            lower = np.full(coef.size, -np.inf)
            upper = np.full(coef.size, np.inf)
            lower[0] = lower[2] = 0.0
            upper[3] = 0.0
            coef = lsq_linear(design, target, bounds=(lower, upper), method="bvls").x
        omega = np.asarray(coef[5:], dtype=np.float64) if hyp.masked else np.zeros(g.size)
        fit = Fit(float(coef[0]), float(coef[1]), float(coef[2]), float(coef[3]), float(coef[4]), omega)
        fit.cost = self.cost(g, fit)
        return fit

    def _pair_targets(self, fit: Fit) -> FloatArray:
        t = self.hyp.offdiag - fit.b - (fit.omega[:, np.newaxis] + fit.omega[np.newaxis, :]) / 2.0
        np.fill_diagonal(t, 0.0)
        return np.asarray(t, dtype=np.float64)

    def _node_offsets(self, g: IntArray, fit: Fit) -> FloatArray:
        """What the node targets hold beyond ``α Σ_tt + β μ_t + a R_i``."""
        real = g >= 0
        n_real = int(real.sum())
        out = self.node_targets(g) - fit.kappa - fit.b * (n_real - 1)
        if self.hyp.masked:
            omega_real = float(fit.omega[real].sum())
            out = out - (
                (1.0 - self.hyp.weight) * fit.omega
                + 0.5 * (n_real - 1) * fit.omega
                + 0.5 * (omega_real - np.where(real, fit.omega, 0.0))
            )
        return np.asarray(out, dtype=np.float64)

    def _warm_costs(self) -> FloatArray | None:
        if self.warm_target is None or self.hyp.warm is None:
            return None
        known = np.isfinite(self.warm_target)
        gap = self.hyp.warm[:, np.newaxis] - np.where(known, self.warm_target, 0.5)[np.newaxis, :]
        return np.where(known[np.newaxis, :], np.minimum(gap**2 / self.warm_scale**2, 9.0), 0.0)

    def node_costs(self, g: IntArray, fit: Fit) -> FloatArray:
        """Cost of qubit ``i`` taking ticker ``t``, the other labels fixed (exact for real ``i``
        keeping its label; the approximation the local search ranks moves by otherwise)."""
        s, mu = self.cand.covariance, self.cand.mean
        real = g >= 0
        safe = np.where(real, g, 0)
        totals = s[:, safe[real]].sum(axis=1)  # Σ_{l real} S[t, g_l]
        own = np.where(real[:, np.newaxis], s[safe, :], 0.0)  # S[g_i, t] for real i
        predicted = fit.alpha * np.diag(s)[np.newaxis, :] + fit.beta * mu[np.newaxis, :]
        predicted = predicted + fit.a * (totals[np.newaxis, :] - own)
        costs = (self._node_offsets(g, fit)[:, np.newaxis] - predicted) ** 2 / self.vf
        warm = self._warm_costs()
        return np.asarray(costs if warm is None else costs + warm, dtype=np.float64)

    def node_residuals(self, g: IntArray, fit: Fit) -> FloatArray:
        """Per real qubit, its node cost under its own label (0 for decoys)."""
        real = np.flatnonzero(g >= 0)
        out = np.zeros(g.size)
        out[real] = self.node_costs(g, fit)[real, g[real]]
        return out

    def pair_residuals(self, g: IntArray, fit: Fit) -> FloatArray:
        """Squared pair residuals over ``vo`` (zero for pairs with a decoy)."""
        real = np.flatnonzero(g >= 0)
        out = np.zeros((g.size, g.size))
        t = self._pair_targets(fit)
        s = self.cand.covariance
        block = (t[np.ix_(real, real)] - fit.a * s[np.ix_(g[real], g[real])]) ** 2 / self.vo
        np.fill_diagonal(block, 0.0)
        out[np.ix_(real, real)] = block
        return out

    def cost(self, g: IntArray, fit: Fit) -> float:
        """Weighted residual sum of squares of ``g`` under ``fit``."""
        return float(self.pair_residuals(g, fit).sum() / 2.0 + self.node_residuals(g, fit).sum())

    def _raw(self, g: IntArray, fit: Fit) -> tuple[float, int, float, int, float]:
        """Raw residual sums (pairs, nodes), their counts, and the warm-start cost."""
        real = np.flatnonzero(g >= 0)
        pairs = float(self.pair_residuals(g, fit).sum() / 2.0 * self.vo)
        warm = self._warm_costs()
        nodes = self.node_residuals(g, fit)[real]
        warm_part = 0.0 if warm is None else float(warm[real, g[real]].sum())
        node_raw = float((nodes.sum() - warm_part) * self.vf)
        return pairs, real.size * (real.size - 1) // 2, node_raw, real.size, warm_part

    def score(self, g: IntArray, fit: Fit) -> float:
        """Profile negative log-likelihood with unknown noise levels per block (comparable across
        estimates and readings): ``n_p/2·log(RSS_p/n_p) + n_n/2·log(RSS_n/n_n)`` + warm cost."""
        pairs, n_pairs, nodes, n_nodes, warm = self._raw(g, fit)
        floor_o, floor_f = 1e-9 * self._data_vo, 1e-9 * self._data_vf
        return float(
            0.5 * n_pairs * np.log(max(pairs / max(n_pairs, 1), floor_o))
            + 0.5 * n_nodes * np.log(max(nodes / max(n_nodes, 1), floor_f))
            + warm
        )

    def adapt(self, g: IntArray, fit: Fit) -> Fit:
        """Weigh each block by its own residual variance (iteratively reweighted least squares:
        clean fields, say, then count for much more than noisy couplings), and refit."""
        pairs, n_pairs, nodes, n_nodes, _ = self._raw(g, fit)
        self.vo = max(pairs / max(n_pairs, 1), 1e-6 * self._data_vo)
        self.vf = max(nodes / max(n_nodes, 1), 1e-6 * self._data_vf)
        return self.fit(g)

    def _moves(self, g: IntArray, fit: Fit) -> list[tuple[float, tuple[int, ...]]]:
        """Improving moves by their change of cost at fixed model parameters, best first.

        Exact at fixed parameters for swaps and replacements (pair rows and the per-qubit field
        terms, whose row sums move with every label); the decoy exchanges and the global
        relabelling are estimates. Move codes: ``(0, i, u)`` qubit ``i`` takes unused ticker
        ``u``; ``(1, i, j)`` swap; ``(2, i, j, u)`` real ``i`` becomes a decoy and decoy ``j``
        takes ``u``; ``(3, *labels)`` relabel all.
        """
        s, mu = self.cand.covariance, self.cand.mean
        num_tickers = s.shape[0]
        t = self._pair_targets(fit)
        nd = self.node_costs(g, fit)
        real_mask = g >= 0
        safe = np.where(real_mask, g, 0)
        weights = real_mask.astype(np.float64)
        spread = s[:, safe].T * weights[:, np.newaxis]  # (n, T): S[t, g_l] for real l
        tr = t * weights[np.newaxis, :]
        a = fit.a
        own = (spread**2).sum(axis=0)
        self_term = np.where(real_mask[:, np.newaxis], s[safe, :] ** 2, 0.0)
        rc = (
            (tr**2).sum(axis=1)[:, np.newaxis]
            - 2.0 * a * tr @ spread
            + a * a * (own[np.newaxis, :] - self_term)
        ) / self.vo
        real = np.flatnonzero(real_mask)
        decoys = np.flatnonzero(~real_mask)
        used = np.zeros(num_tickers, dtype=np.bool_)
        gi = g[real]
        used[gi] = True
        unused = np.flatnonzero(~used)
        warm = self._warm_costs()
        warm_real = np.zeros((real.size, num_tickers)) if warm is None else warm[real]
        # Field terms: y_i = offsets, pred_i = α S_tt + β μ_t + a R_i with R_i the row sum.
        y = self._node_offsets(g, fit)[real]
        sub = s[np.ix_(gi, gi)]
        pred = fit.alpha * np.diag(sub) + fit.beta * mu[gi] + a * (sub.sum(axis=1) - np.diag(sub))
        r = y - pred
        row_pairs = rc[real, gi]
        current = row_pairs + r**2 / self.vf + warm_real[np.arange(real.size), gi]
        moves: list[tuple[float, tuple[int, ...]]] = []
        if unused.size:  # real qubit i takes unused ticker u: every row sum moves
            big_g = s[gi, :]  # (k, T): S[g_l, u]
            weighted = r @ big_g  # Σ_l r_l S[g_l, u]
            p1 = (big_g**2).sum(axis=0)
            p2 = big_g.T @ big_g
            s_iu = big_g[:, unused]  # S[g_i, u]
            s_ii = np.diag(sub)[:, np.newaxis]
            cross = (weighted[unused][np.newaxis, :] - r[:, np.newaxis] * s_iu) - (
                weighted[gi][:, np.newaxis] - r[:, np.newaxis] * s_ii
            )
            squares = (
                (p1[unused][np.newaxis, :] - s_iu**2)
                - 2.0 * (p2[np.ix_(gi, unused)] - s_iu * s_ii)
                + (p1[gi][:, np.newaxis] - s_ii**2)
            )
            others = (-2.0 * a * cross + a * a * squares) / self.vf
            totals = big_g.sum(axis=0)  # Σ_l S[g_l, u]
            mine = y[:, np.newaxis] - (
                fit.alpha * np.diag(s)[unused][np.newaxis, :]
                + fit.beta * mu[unused][np.newaxis, :]
                + a * (totals[unused][np.newaxis, :] - s_iu)
            )
            delta = (
                rc[np.ix_(real, unused)]
                - row_pairs[:, np.newaxis]
                + others
                + (mine**2 - r[:, np.newaxis] ** 2) / self.vf
                + warm_real[:, unused]
                - warm_real[np.arange(real.size), gi][:, np.newaxis]
            )
            for k in np.flatnonzero(delta.ravel() < 0.0):
                moves.append(
                    (float(delta.flat[k]), (0, int(real[k // unused.size]), int(unused[k % unused.size])))
                )
        # Swap two real qubits: the row sums stay, qubit i inherits j's prediction.
        tij = t[np.ix_(real, real)]
        e_same_j = (tij - a * s[gi, gi][np.newaxis, :]) ** 2
        e_same_i = (tij - a * s[gi, gi][:, np.newaxis]) ** 2
        e_pair = (tij - a * s[np.ix_(gi, gi)]) ** 2
        swapped_rows = rc[np.ix_(real, gi)]  # [i, j]: qubit i's pair row with ticker g_j
        swapped_nodes = (y[:, np.newaxis] - pred[np.newaxis, :]) ** 2 / self.vf + warm_real[:, gi]
        delta = (
            swapped_rows
            + swapped_rows.T
            + swapped_nodes
            + swapped_nodes.T
            - current[:, np.newaxis]
            - current[np.newaxis, :]
            - (e_same_j + e_same_i - 2.0 * e_pair) / self.vo
        )
        delta = np.triu(delta, k=1) + np.tril(np.full_like(delta, np.inf))
        for k in np.flatnonzero(delta.ravel() < 0.0):
            moves.append((float(delta.flat[k]), (1, int(real[k // real.size]), int(real[k % real.size]))))
        if decoys.size:  # real i becomes a decoy, decoy j takes ticker u (unused or g_i)
            for position, i in enumerate(real):
                options = np.append(unused, g[i])
                pair = (t[decoys, i][:, np.newaxis] - a * s[np.ix_(options, [g[i]])].T) ** 2 / self.vo
                delta_x = rc[np.ix_(decoys, options)] - pair + nd[np.ix_(decoys, options)] - current[position]
                for k in np.flatnonzero(delta_x.ravel() < 0.0):
                    move = (2, int(i), int(decoys[k // options.size]), int(options[k % options.size]))
                    moves.append((float(delta_x.flat[k]), move))
        # A global step: every real qubit re-labelled at once by linear assignment against the
        # others' current labels (mean field); it escapes what single swaps cannot.
        rows, cols = linear_sum_assignment(rc[real] + nd[real])
        relabel = g.copy()
        relabel[real[rows]] = cols
        if not np.array_equal(relabel, g):
            estimate = float((rc[real[rows], cols] + nd[real[rows], cols]).sum() - current.sum())
            moves.append((min(estimate, -1e-300), (3, *(int(v) for v in relabel))))
        moves.sort(key=lambda item: item[0])
        return moves

    def batch_costs(self, labels: IntArray) -> FloatArray:
        """The refitted cost of many assignments at once (rows of ``labels``, all with the same
        number of real qubits), by batched weighted normal equations; sign limits are ignored."""
        hyp, s, mu = self.hyp, self.cand.covariance, self.cand.mean
        k, n = labels.shape
        real = labels >= 0
        safe = np.where(real, labels, 0)
        n_real = int(real[0].sum())
        iu = np.triu_indices(n, 1)
        so, sf = np.sqrt(self.vo), np.sqrt(self.vf)
        pair_w = (real[:, iu[0]] & real[:, iu[1]]).astype(np.float64)  # (k, P)
        node_w = real.astype(np.float64)
        extra = n if hyp.masked else 0
        num_pairs = iu[0].size
        design = np.zeros((k, num_pairs + n, 5 + extra))
        design[:, :num_pairs, 0] = s[safe[:, iu[0]], safe[:, iu[1]]]
        design[:, :num_pairs, 1] = 1.0
        gathered = s[safe[:, :, np.newaxis], safe[:, np.newaxis, :]] * node_w[:, np.newaxis, :]
        diag = s[safe, safe]
        design[:, num_pairs:, 0] = gathered.sum(axis=2) - diag * node_w
        design[:, num_pairs:, 1] = n_real - 1.0
        design[:, num_pairs:, 2] = diag
        design[:, num_pairs:, 3] = mu[safe]
        design[:, num_pairs:, 4] = 1.0
        if hyp.masked:
            rows = np.arange(num_pairs)
            design[:, rows, 5 + iu[0]] = 0.5
            design[:, rows, 5 + iu[1]] = 0.5
            design[:, num_pairs:, 5:] = 0.5 * node_w[:, np.newaxis, :]
            index = np.arange(n)
            design[:, num_pairs + index, 5 + index] = (1.0 - hyp.weight) + 0.5 * (n_real - 1)
        decoy_w = np.where(real, 0.0, 2.0 * hyp.active[np.newaxis, :] - 1.0)
        node_y = hyp.fields[np.newaxis, :] + decoy_w @ hyp.offdiag.T
        target = np.concatenate([np.broadcast_to(hyp.offdiag[iu], (k, num_pairs)) / so, node_y / sf], axis=1)
        design[:, :num_pairs] /= so
        design[:, num_pairs:] /= sf
        weights = np.concatenate([pair_w, node_w], axis=1)
        weighted = design * weights[:, :, np.newaxis]
        normal = np.einsum("krp,krq->kpq", weighted, design)
        normal += (
            1e-12 * np.eye(normal.shape[1])[np.newaxis] * np.trace(normal, axis1=1, axis2=2)[:, None, None]
        )
        rhs = np.einsum("krp,kr->kp", weighted, target)
        theta = np.linalg.solve(normal, rhs[:, :, np.newaxis])[:, :, 0]
        residual = target - np.einsum("krp,kp->kr", design, theta)
        costs = (weights * residual**2).sum(axis=1)
        warm = self._warm_costs()
        if warm is not None:
            costs = costs + (warm[np.arange(n)[np.newaxis, :], safe] * node_w).sum(axis=1)
        return np.asarray(costs, dtype=np.float64)

    def _neighbours(self, g: IntArray) -> IntArray:
        """Every single swap and replacement of ``g``, one per row."""
        n, num_tickers = g.size, self.cand.mean.size
        real = np.flatnonzero(g >= 0)
        unused = np.setdiff1d(np.arange(num_tickers), g[real])
        out = []
        for i in range(n):
            for j in range(i + 1, n):
                if g[i] != g[j]:
                    swapped = g.copy()
                    swapped[i], swapped[j] = g[j], g[i]
                    out.append(swapped)
        for qubit in real:
            for u in unused:
                moved = g.copy()
                moved[qubit] = u
                out.append(moved)
        return np.array(out, dtype=np.int64).reshape(-1, n)

    def local_search(
        self, g: IntArray, max_moves: int = 400, tries: int = 6, *, thorough: bool = True
    ) -> tuple[IntArray, Fit]:
        """Best-improvement moves (swap two qubits' labels, give a qubit an unused ticker, turn a
        real qubit into a decoy and a decoy into a real one, relabel all at once by linear
        assignment), ranked by their change of cost at fixed model parameters; the ``tries`` best
        are checked by refitting and the one that lowers the cost most is taken. Where no move
        helps at fixed parameters and ``thorough`` is set, every swap and replacement is refitted
        (in one batch): a wrong label can distort the parameters so that its fix only shows after
        a refit."""
        g = g.copy()
        fit = self.fit(g)
        for _ in range(max_moves):
            chosen: tuple[IntArray, Fit] | None = None
            for _, move in self._moves(g, fit)[:tries]:
                trial = g.copy()
                if move[0] == 0:
                    trial[move[1]] = move[2]
                elif move[0] == 3:
                    trial = np.array(move[1:], dtype=np.int64)
                elif move[0] == 1:
                    trial[move[1]], trial[move[2]] = g[move[2]], g[move[1]]
                else:
                    trial[move[2]] = move[3]
                    trial[move[1]] = DECOY
                refit = self.fit(trial)
                bar = fit.cost if chosen is None else chosen[1].cost
                if refit.cost < bar - 1e-12 * max(bar, 1e-300):
                    chosen = (trial, refit)
            if chosen is None and thorough:
                neighbours = self._neighbours(g)
                if neighbours.size:
                    order = np.argsort(self.batch_costs(neighbours))
                    for index in order[:tries]:
                        refit = self.fit(neighbours[index])
                        if refit.cost < fit.cost - 1e-12 * max(fit.cost, 1e-300):
                            chosen = (neighbours[index], refit)
                            break
            if chosen is None:
                break
            g, fit = chosen
        return g, fit


def _standard(values: FloatArray) -> FloatArray:
    spread = float(values.std())
    return np.asarray((values - values.mean()) / (spread if spread > 0.0 else 1.0), dtype=np.float64)


def _centred(matrix: FloatArray) -> FloatArray:
    """Off-diagonal double centring: removes row shifts ``u_i + u_j`` (the XY mask's freedom)."""
    n = matrix.shape[0]
    off = matrix.copy()
    np.fill_diagonal(off, 0.0)
    rows = off.sum(axis=1) / max(n - 1, 1)
    total = off.sum() / max(n * (n - 1), 1)
    out = off - rows[:, np.newaxis] - rows[np.newaxis, :] + total
    np.fill_diagonal(out, 0.0)
    return np.asarray(out, dtype=np.float64)


def _qap_matrix(offdiag: FloatArray, diag: FloatArray, masked: bool) -> FloatArray:
    n = diag.size
    base = _centred(offdiag) if masked else offdiag
    out = np.zeros((n, n))
    iu = np.triu_indices(n, 1)
    out[iu] = _standard(base[iu])
    out = out + out.T
    out[np.diag_indices(n)] = _standard(diag)
    return out


def _label_decoys(problem: Problem, g: IntArray) -> IntArray:
    """Turn the worst-fitting real labels into decoys until exactly ``num_decoys`` are left."""
    g = g.copy()
    while int((g < 0).sum()) < problem.num_decoys:
        fit = problem.fit(g)
        badness = problem.pair_residuals(g, fit).sum(axis=1) + problem.node_residuals(g, fit)
        badness[g < 0] = -np.inf
        g[int(np.argmax(badness))] = DECOY
    return g


def _qap_start(problem: Problem, rng: np.random.Generator, start: str | FloatArray) -> IntArray:
    hyp, cand = problem.hyp, problem.cand
    n, m = hyp.fields.size, cand.mean.size
    diag = hyp.fields - hyp.offdiag.sum(axis=1)  # −2h − Σ_j Q_ij = Q_ii
    a = _qap_matrix(hyp.offdiag, diag, hyp.masked)
    b = _qap_matrix(cand.covariance, np.diag(cand.covariance), hyp.masked)
    size = max(n, m)
    big_a = np.zeros((size, size))
    big_a[:n, :n] = a
    big_b = np.zeros((size, size))
    big_b[:m, :m] = b
    options: dict[str, Any] = {"maximize": True, "rng": rng}
    if isinstance(start, str):
        options["P0"] = start
    else:
        # FAQ wants a doubly stochastic start: half the given assignment (completed to a
        # permutation of the padded size), half the barycentre.
        rows, cols = np.nonzero(start)
        free_rows = np.setdiff1d(np.arange(size), rows)
        free_cols = np.setdiff1d(np.arange(size), cols)
        perm = np.zeros((size, size))
        perm[rows, cols] = 1.0
        perm[free_rows, free_cols] = 1.0
        options["P0"] = 0.5 * perm + 0.5 / size
    result = quadratic_assignment(big_a, big_b, method="faq", options=options)
    g = np.asarray(result.col_ind[:n], dtype=np.int64)
    g[g >= m] = DECOY
    return g


@dataclass(frozen=True)
class AttackResult:
    """Every attack's label per sent qubit (ticker index or −1 for decoy)."""

    labels: dict[str, IntArray]
    best_candidate: str


def _signatures(offdiag: FloatArray, diag: FloatArray, masked: bool, quantiles: int = 8) -> FloatArray:
    """Per-node permutation-invariant features: diagonal, mean coupling, quantiles of the row."""
    n = diag.size
    base = _centred(offdiag) if masked else offdiag
    iu = np.triu_indices(n, 1)
    mean, spread = float(base[iu].mean()), float(base[iu].std()) or 1.0
    z = (base - mean) / spread
    rows = np.array([np.delete(z[i], i) for i in range(n)])
    levels = np.linspace(0.1, 0.9, quantiles)
    q = np.quantile(rows, levels, axis=1).T
    features = [_standard(diag)[:, np.newaxis], rows.mean(axis=1)[:, np.newaxis], q]
    return np.hstack(features)


def _assign(costs: FloatArray, num_decoys: int, rng: np.random.Generator) -> tuple[IntArray, float]:
    """Linear assignment of qubits to tickers, with ``num_decoys`` decoy columns at median cost."""
    n, m = costs.shape
    jitter = rng.uniform(0.0, 1e-9, size=costs.shape)  # random tie-breaking
    fill = float(np.partition(costs.ravel(), costs.size // 2)[costs.size // 2]) if num_decoys else 0.0
    padded = np.hstack([costs + jitter, np.full((n, num_decoys), fill)])
    rows, cols = linear_sum_assignment(padded)
    g = np.full(n, DECOY, dtype=np.int64)
    g[rows] = np.where(cols < m, cols, DECOY)
    return g, float(padded[rows, cols].sum())


def perturb(g: IntArray, rng: np.random.Generator, moves: int, num_tickers: int) -> IntArray:
    """``moves`` random swaps of two qubits' labels or changes to an unused ticker."""
    g = g.copy()
    for _ in range(moves):
        if rng.random() < 0.7:
            i, j = rng.choice(g.size, size=2, replace=False)
            g[i], g[j] = g[j], g[i]
        else:
            unused = np.setdiff1d(np.arange(num_tickers), g[g >= 0])
            real = np.flatnonzero(g >= 0)
            if unused.size and real.size:
                g[rng.choice(real)] = rng.choice(unused)
    return g


def iterated_local_search(
    problem: Problem, g: IntArray, rng: np.random.Generator, iterations: int
) -> tuple[IntArray, Fit, float]:
    """Local search with reweighting, then ``iterations`` kicks of 2 to n/2 random moves, keeping the
    point of best :meth:`Problem.score`. Returns the labels, their fit and the score."""
    best_g, best_fit = problem.local_search(g)
    for _ in range(2):
        best_fit = problem.adapt(best_g, best_fit)
        best_g, best_fit = problem.local_search(best_g)
    best_score = problem.score(best_g, best_fit)
    for _ in range(iterations):
        kicked = perturb(best_g, rng, int(rng.integers(2, max(5, g.size // 2 + 1))), problem.cand.mean.size)
        found, fit = problem.local_search(kicked)
        score = problem.score(found, fit)
        if score < best_score - 1e-9:
            best_g, best_fit, best_score = found, problem.adapt(found, fit), score
    return best_g, best_fit, best_score


def fields_start(
    problem: Problem, rng: np.random.Generator, directions: int = 20, rounds: int = 4
) -> tuple[IntArray, float]:
    """A start from the per-qubit fields alone (1-D matching).

    ``−2h_i`` is, up to an affine map, ``w·(Σ_tt, μ_t, Σ_{u≠t} Σ_tu)`` for an unknown ``w`` (the
    row sum over all 20 stocks stands in for the one over the unknown portfolio). For random
    directions ``w`` the standardised values are matched by linear assignment, then ``w`` is
    refitted by least squares on the match and the match redone, a few rounds. Returns the best
    labels and their residual share (residual variance over the fields' variance).
    """
    hyp, cand = problem.hyp, problem.cand
    s = cand.covariance
    features = np.column_stack([np.diag(s), cand.mean, s.sum(axis=1) - np.diag(s)])
    features = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-300)
    y = _standard(hyp.fields)
    best: tuple[float, IntArray] | None = None
    for _ in range(directions):
        w = rng.normal(size=3)
        for _ in range(rounds):
            p = _standard(features @ w)
            g, _ = _assign((y[:, np.newaxis] - p[np.newaxis, :]) ** 2, problem.num_decoys, rng)
            real = np.flatnonzero(g >= 0)
            x = np.column_stack([features[g[real]], np.ones(real.size)])
            coef, *_ = np.linalg.lstsq(x, y[real], rcond=None)
            rss = float(((y[real] - x @ coef) ** 2).sum()) / real.size
            if best is None or rss < best[0]:
                best = (rss, g)
            if np.abs(coef[:3] - w).max() <= 1e-9 * np.abs(w).max():
                break
            w = coef[:3]
    assert best is not None
    return best[1], best[0]


def attack(
    view: SentView,
    candidates: Sequence[Candidate],
    rng: np.random.Generator,
    *,
    shortlist: int = 3,
    iterations: int = 20,
) -> AttackResult:
    """All attacks on one sent problem.

    Args:
        view: What the cloud saw.
        candidates: The attacker's dictionary of public estimates.
        rng: The attacker's randomness.
        shortlist: How many (reading, estimate) pairs get the iterated local search.
        iterations: Kicks of the iterated local search.
    """
    hyps = hypotheses(view)
    labels: dict[str, IntArray] = {}

    # (d) signatures: the cheapest full guess, and a start for the graph matching.
    best_sig: tuple[float, IntArray] | None = None
    sig_starts: dict[tuple[int, int], IntArray] = {}
    for h_index, hyp in enumerate(hyps):
        sent_sig = _signatures(hyp.offdiag, hyp.fields - hyp.offdiag.sum(axis=1), hyp.masked)
        for c_index, cand in enumerate(candidates):
            cand_sig = _signatures(cand.covariance, np.diag(cand.covariance), hyp.masked)
            costs = ((sent_sig[:, np.newaxis, :] - cand_sig[np.newaxis, :, :]) ** 2).sum(axis=2)
            g, total = _assign(costs, view.num_decoys, rng)
            sig_starts[(h_index, c_index)] = g
            if best_sig is None or total < best_sig[0]:
                best_sig = (total, g)
    assert best_sig is not None
    labels["signature"] = best_sig[1]

    # (a)+(b)+(c) graph matching over the dictionary: for every (reading, estimate) FAQ from two
    # starts and a local search (coupling evidence), and the 1-D match of the fields (field
    # evidence); the best few of each kind get an iterated local search with reweighting.
    by_pairs: list[tuple[float, int, IntArray]] = []
    by_fields: list[tuple[float, int, IntArray]] = []
    problems: list[Problem] = []
    for h_index, hyp in enumerate(hyps):
        for c_index, cand in enumerate(candidates):
            problem = Problem(hyp, cand, view.num_decoys)
            problems.append(problem)
            start = sig_starts[(h_index, c_index)]
            p0 = np.zeros((hyp.fields.size, cand.mean.size))
            real = np.flatnonzero(start >= 0)
            p0[real, start[real]] = 1.0
            for init in ("barycenter", p0):
                start = _label_decoys(problem, _qap_start(problem, rng, init))
                found, fit = problem.local_search(start, thorough=False)
                score = problem.score(found, problem.adapt(found, fit))
                problem.vo, problem.vf = problem._data_vo, problem._data_vf
                by_pairs.append((score if fit.a > 0.0 else np.inf, len(problems) - 1, found))
            g_fields, share = fields_start(problem, rng)
            by_fields.append((share, len(problems) - 1, _label_decoys(problem, g_fields)))
    by_pairs.sort(key=lambda item: item[0])
    by_fields.sort(key=lambda item: item[0])
    best: tuple[float, Problem, IntArray, Fit] | None = None
    for ranking in (by_pairs, by_fields):
        chosen: set[int] = set()
        for _, index, g in ranking:
            if index in chosen:
                continue
            chosen.add(index)
            problem = problems[index]
            found, fit, score = iterated_local_search(problem, g, rng, iterations)
            score = score if fit.a > 0.0 else np.inf  # a negative scale is not a covariance
            if best is None or score < best[0]:
                best = (score, problem, found, fit)
            if len(chosen) >= shortlist:
                break
    assert best is not None
    _, problem, g_match, fit = best
    labels["match"] = g_match

    if view.warm_start is not None:
        labels["match+warm"] = _warm_refined(view, problem, g_match, fit)
        labels["warm"] = _warm_only(view, problem, rng)
    return AttackResult(labels, problem.cand.label)


def _relaxation(cand: Candidate, tickers: IntArray, risk: float | None, budget: int) -> FloatArray:
    cov = cand.covariance[np.ix_(tickers, tickers)]
    mu = cand.mean[tickers]
    budget = min(max(budget, 1), tickers.size - 1)
    if risk is None or not np.isfinite(risk) or risk <= 0.0:
        risk = balanced_risk_aversion(mu, cov, budget)
    names = tuple(str(t) for t in tickers)
    return SelectionProblem(names, mu, cov, risk, budget).relaxation()


def _warm_refined(view: SentView, problem: Problem, g: IntArray, fit: Fit) -> IntArray:
    """(e) the matched portfolio's recomputed relaxation as extra evidence, then refine."""
    hyp = problem.hyp
    assert hyp.warm is not None
    real = np.flatnonzero(g >= 0)
    risk = -fit.alpha / fit.beta if fit.beta != 0.0 else None  # Q_ii = γ(qΣ_ii − μ_i) + const
    budget = hyp.weight if view.mixer in XY_MIXERS else round(float(hyp.warm[real].sum()))
    relaxed = _relaxation(problem.cand, g[real], risk, budget)
    target = np.full(problem.cand.mean.size, np.nan)
    target[g[real]] = np.clip(relaxed, WARM_EPSILON, 1.0 - WARM_EPSILON)
    # The recomputed relaxation is itself uncertain (estimate, risk aversion): the warm start
    # weighs in with that uncertainty and a cap, so it can settle ties, not overrule the fit.
    informed = Problem(hyp, problem.cand, view.num_decoys, target, float(np.hypot(view.warm_noise, 0.1)))
    found, _ = informed.local_search(g)
    return found


def _warm_only(view: SentView, problem: Problem, rng: np.random.Generator) -> IntArray:
    """(e) the warm start alone against the relaxation of all 20 stocks (best estimate)."""
    best: tuple[float, IntArray] | None = None
    for hyp in hypotheses(view):
        assert hyp.warm is not None
        n_real = view.num_qubits - view.num_decoys
        tickers = np.arange(problem.cand.mean.size)
        budget = round(float(np.sort(hyp.warm)[-n_real:].sum()) * tickers.size / max(n_real, 1))
        relaxed = np.clip(_relaxation(problem.cand, tickers, None, budget), WARM_EPSILON, 1 - WARM_EPSILON)
        costs = (hyp.warm[:, np.newaxis] - relaxed[np.newaxis, :]) ** 2
        g, total = _assign(costs, view.num_decoys, rng)
        if best is None or total < best[0]:
            best = (total, g)
    assert best is not None
    return best[1]


def reidentified(labels: IntArray, key: ObfuscationKey, tickers: IntArray) -> float:
    """Share of real variables whose sent qubit got its true ticker."""
    return float(np.mean(labels[np.array(key.positions)] == tickers))


# ------------------------------------------------------------------------------------- quality


@dataclass(frozen=True)
class Quality:
    """Sample quality of one obfuscated run, on the true problem."""

    ratio: float
    p_opt: float
    feasible: float
    optimum_share: float
    objective: float
    seconds: float


def quality(trial: Trial, sent: ObfuscatedProblem, key: ObfuscationKey, mixer: str, seed: int) -> Quality:
    """Plan and simulate the sent problem with the engine, map back, post-process (module doc)."""
    problem = trial.problem
    best, worst = objective_range(problem)
    optimum = exact(problem)
    spec = QaoaSpec(mixer=mixer, reps=default_reps(problem.num_variables))  # type: ignore[arg-type]
    started = time.perf_counter()
    # As the job does (jobs/pipeline.py: plan): xy-warm's angles aim at the true problem.
    true_ising = trial.ising

    def target(sent_bits: np.ndarray) -> np.ndarray:
        return true_ising.energy_of_bits(key.true_bits(sent_bits))

    plan = plan_qaoa(
        sent.ising,
        spec,
        seed=seed,
        hamming_weight=sent.hamming_weight,
        warm_start=sent.warm_start,
        target=target if mixer == "xy-warm" else None,
    )
    sent_bits, probabilities = final_distribution(sent.ising, plan)
    seconds = time.perf_counter() - started
    probabilities = probabilities / probabilities.sum()
    bits = key.true_bits(sent_bits)
    feasible = problem.is_feasible(bits)
    values = problem.objective(bits)
    mass = float(probabilities[feasible].sum())
    mean = float((probabilities[feasible] * values[feasible]).sum() / mass) if mass > 0 else worst
    ratio = (worst - mean) / (worst - best) if worst > best else 1.0
    is_opt = np.all(bits == np.array(optimum.bits, dtype=np.uint8), axis=1)
    rng = np.random.default_rng(seed)
    drawn = rng.choice(probabilities.size, size=SHOTS, p=probabilities)
    unique, shots = np.unique(drawn, return_counts=True)
    outcomes = {"".join(map(str, sent_bits[k])): int(c) for k, c in zip(unique, shots, strict=True)}
    decoded, counts = decode_counts(deobfuscate_counts(outcomes, key), problem.num_variables)
    processed = postprocess(problem, decoded, counts, optimum_bits=optimum.bits)
    return Quality(
        ratio=ratio,
        p_opt=float(probabilities[is_opt].sum()),
        feasible=mass,
        optimum_share=float(processed.optimum_share or 0.0),
        objective=processed.refined_objective,
        seconds=seconds,
    )


# ---------------------------------------------------------------------------------------- runs


ATTACKS = ("match", "signature", "match+warm", "warm")


@dataclass
class LevelResult:
    """Everything measured for one (level, mixer) over the trials."""

    rates: dict[str, list[float]] = field(default_factory=dict)
    qualities: list[Quality] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    qubits: list[int] = field(default_factory=list)
    attack_seconds: float = 0.0


def run(
    *,
    trials: int,
    assets: int,
    levels: Sequence[str],
    mixers: Sequence[str],
    quality_trials: int,
    seed: int = 0,
    progress: bool = False,
    jobs: int = 1,
) -> dict[tuple[str, str], LevelResult]:
    """Attack (and, on the first ``quality_trials`` trials, simulate) every level and mixer.

    Trials are independent (each seeds its own generators), so ``jobs`` processes share them and
    the figures do not depend on ``jobs``.
    """
    work = functools.partial(
        _run_trial,
        assets=assets,
        levels=tuple(levels),
        mixers=tuple(mixers),
        quality_trials=quality_trials,
        seed=seed,
        progress=progress,
    )
    if jobs > 1 and trials > 1:
        with multiprocessing.get_context("fork").Pool(min(jobs, trials)) as pool:
            per_trial = pool.map(work, range(trials), chunksize=1)
    else:
        per_trial = [work(t) for t in range(trials)]
    results: dict[tuple[str, str], LevelResult] = {}
    for found in per_trial:  # in trial order, whatever order the processes finished in
        for name, part in found.items():
            total = results.setdefault(name, LevelResult())
            for attack_name, values in part.rates.items():
                total.rates.setdefault(attack_name, []).extend(values)
            total.qualities.extend(part.qualities)
            total.gaps.extend(part.gaps)
            total.qubits.extend(part.qubits)
            total.attack_seconds += part.attack_seconds
    return results


def _run_trial(
    t: int,
    *,
    assets: int,
    levels: tuple[str, ...],
    mixers: tuple[str, ...],
    quality_trials: int,
    seed: int,
    progress: bool,
) -> dict[tuple[str, str], LevelResult]:
    results: dict[tuple[str, str], LevelResult] = {}
    trial = make_trial(seed * 1000 + t, assets)
    candidates = dictionary(trial.end)
    for mixer in mixers:
        baseline: float | None = None
        for level_index, level in enumerate(levels):
            result = results.setdefault((level, mixer), LevelResult())
            rng = np.random.default_rng([seed, t, level_index, len(mixer)])
            sent, key = obfuscate_for(trial, level, mixer, rng)
            view = observe(sent, mixer, level, rng)
            started = time.perf_counter()
            found = attack(view, candidates, rng)
            result.attack_seconds += time.perf_counter() - started
            for name, labels in found.labels.items():
                result.rates.setdefault(name, []).append(reidentified(labels, key, trial.tickers))
            result.qubits.append(sent.num_qubits)
            if t < quality_trials:
                measured = quality(trial, sent, key, mixer, seed * 1000 + t)
                result.qualities.append(measured)
                if level == "off":
                    baseline = measured.objective
                if baseline is not None:
                    result.gaps.append((measured.objective - baseline) / abs(baseline))
            if progress:
                rates = {k: round(v[-1], 2) for k, v in result.rates.items()}
                elapsed = time.perf_counter() - started
                print(
                    f"# trial {t} {mixer} {level}: {rates} ({found.best_candidate}) {elapsed:.0f} s",
                    flush=True,
                )
    return results


def best_rate(result: LevelResult) -> float:
    """The best attack's mean re-identification rate (the attacker picks its strategy up front)."""
    return max(float(np.mean(v)) for v in result.rates.values())


def table(results: dict[tuple[str, str], LevelResult], assets: int) -> list[str]:
    """The Markdown table."""
    headers = [
        "mixer",
        "level",
        "qubits",
        *[f"re-id {name}" for name in ATTACKS],
        "re-id best",
        "chance",
        "ratio",
        "P(opt)",
        "feas",
        "opt share",
        "gap vs off (max)",
    ]
    lines = markdown_header(headers)
    for (level, mixer), result in results.items():
        cells = [mixer, level, f"{np.mean(result.qubits):.0f}"]
        for name in ATTACKS:
            values = result.rates.get(name)
            cells.append("–" if values is None else f"{100 * np.mean(values):.1f} %")
        cells.append(f"{100 * best_rate(result):.1f} %")
        cells.append(f"{100 / 20:.1f} %")
        if result.qualities:
            q = result.qualities
            cells += [
                f"{np.mean([x.ratio for x in q]):.3f}",
                f"{np.mean([x.p_opt for x in q]):.4f}",
                f"{np.mean([x.feasible for x in q]):.2f}",
                f"{np.mean([x.optimum_share for x in q]):.4f}",
                f"{100 * max(result.gaps):+.3f} %" if result.gaps else "–",
            ]
        else:
            cells += ["–"] * 5
        lines.append(markdown_row(cells))
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    """Run the suite and print the table."""
    parser = argparse.ArgumentParser(description="Re-identification attacks on the obfuscation proxy")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--assets", type=int, default=16)
    parser.add_argument("--levels", nargs="+", default=[CONTROL, *PRIVACY_LEVELS])
    parser.add_argument("--mixers", nargs="+", default=["x-warm", "xy"])
    parser.add_argument("--quality-trials", type=int, default=None, help="default: every trial")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: cores)")
    args = parser.parse_args(argv)
    levels = list(args.levels)
    if "off" in levels:  # the baseline of the gap column is measured first
        levels.remove("off")
        levels.insert(0, "off")
    started = time.perf_counter()
    results = run(
        trials=args.trials,
        assets=args.assets,
        levels=levels,
        mixers=args.mixers,
        quality_trials=args.trials if args.quality_trials is None else args.quality_trials,
        seed=args.seed,
        progress=args.progress,
        jobs=args.jobs,
    )
    print(
        f"# Re-identification on S&P 500 subsets: N = {args.assets} of 20 stocks, B = N/2, "
        f"{args.trials} trials (seed {args.seed}), {SHOTS} shots"
    )
    print(f"# {machine()}, numpy {np.__version__}; {time.perf_counter() - started:.0f} s")
    for line in table(results, args.assets):
        print(line)


if __name__ == "__main__":
    main()
