"""Re-identification when the cloud sees k jobs of one client, not one.

A desk that rebalances daily sends the same universe every day. Each job is obfuscated under a
fresh key (permutation, gauge, scale); if its noise is fresh too, a cloud that lines the jobs up
and averages them sees the noise shrink as ``σ/√k``. This benchmark measures it, on the setup of
``benchmarks/leakage.py`` (real prices, N of the 20 stocks, budget N/2, the default mixer), for:

* **same window**: k jobs on the same problem (a desk re-running one optimisation);
* **rolling window**: k consecutive daily rebalances, each on the window ending one trading day
  later (μ, Σ and the risk aversion re-estimated every day, as the service would);

and two ways of drawing the noise:

* ``fresh``: every job's noise independent (the scheme before keyed noise);
* ``keyed``: the default now: 90 % of the noise variance keyed to the client and the variables'
  identities (``proxy/keyed.py``), the same in every job; 10 % fresh.

Attacks, per k:

* ``single``: the attacks of ``benchmarks/leakage.py`` (``match``, ``signature``, ``match+warm``,
  ``warm``) on one job (the first);
* ``aligned``: the attacker first lines the k jobs up — inverts each job's gauge from its coupling
  signs, normalises its scale by the mean coupling (the budget penalty), then matches every job's
  qubits to the first job's (linear assignment on fields and warm-start values, refined by
  iterated assignment on the coupling rows; both global complements tried; the reference is the
  running average, twice) — averages the aligned fields, couplings and warm starts, and runs all
  the attacks of ``benchmarks/leakage.py`` on that average, with a dictionary averaged over the
  same k windows (the cloud knows when each job came). ``align`` is the share of qubits it lined
  up correctly (against the keys).

Re-identification is scored on the first job's key; ``best`` is the best attack's mean over the
trials; the bar is ``2/N``.

Run: ``nice -n 10 .venv/bin/python -m benchmarks.leakage_jobs [--trials 10] [--assets 16]
[--ks 1 5 20] [--jobs 2]`` (about 6 minutes per trial on one core of the 2-core machine of
``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from benchmarks.leakage import (
    END_CHOICES,
    MONTH,
    WARM_EPSILON,
    WINDOWS,
    Candidate,
    IntArray,
    SentView,
    Trial,
    attack,
    dictionary,
    observe,
    reidentified,
)
from benchmarks.report import machine, markdown_header, markdown_row
from qhybrid.domain.qubo import FloatArray
from qhybrid.portfolio.data import balanced_risk_aversion, estimate, load_sp500
from qhybrid.portfolio.selection import SelectionProblem
from qhybrid.proxy.keyed import NoiseKey
from qhybrid.proxy.obfuscation import LEVELS, ObfuscatedProblem, ObfuscationKey, obfuscate

SCENARIOS = ("same", "rolling")
SCHEMES = ("fresh", "keyed")
ATTACKS = ("match", "signature", "match+warm", "warm")
#: How the k jobs are lined up: by the attacker's own matching, or by the keys (a perfect aligner).
ALIGNERS = ("matched", "oracle")
MIXER = "x-warm"


# ------------------------------------------------------------------------------------- the jobs


def client_jobs(seed: int, num_assets: int, k: int, scenario: str) -> list[Trial]:
    """The client's k problems: one universe and window length, the same or rolling windows."""
    names, prices, _ = load_sp500()
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(names), size=num_assets, replace=False)
    window = int(rng.choice(WINDOWS))
    last = prices.shape[0] - MONTH * int(rng.integers(0, END_CHOICES))
    budget = num_assets // 2
    out: list[Trial] = []
    for day in range(k):
        end = last - (k - 1 - day) if scenario == "rolling" else last
        if out and scenario == "same":
            out.append(out[0])
            continue
        fit = estimate(prices[end - window : end, chosen], estimator="ledoit_wolf", returns="simple")
        risk = balanced_risk_aversion(fit.expected_returns, fit.covariance, budget)
        problem = SelectionProblem(
            tuple(names[i] for i in chosen), fit.expected_returns, fit.covariance, risk, budget
        )
        qubo, _ = problem.to_qubo()
        out.append(Trial(problem, chosen.astype(np.int64), end, qubo.to_ising(), problem.relaxation()))
    return out


@functools.cache
def rolling_dictionary(ends: tuple[int, ...]) -> tuple[Candidate, ...]:
    """The attacker's estimates averaged over the days the jobs came (it knows them)."""
    per_day = [dictionary(end) for end in ends]
    return tuple(
        Candidate(
            np.mean([day[i].covariance for day in per_day], axis=0),
            np.mean([day[i].mean for day in per_day], axis=0),
            f"mean of {per_day[0][i].label}",
        )
        for i in range(len(per_day[0]))
    )


def obfuscated(
    trial: Trial, level: str, scheme: str, noise_key: NoiseKey, rng: np.random.Generator
) -> tuple[ObfuscatedProblem, ObfuscationKey]:
    """The service's obfuscation of one job: every job a fresh key; the noise fresh or keyed."""
    keyed = scheme == "keyed"
    return obfuscate(
        trial.ising,
        level=level,  # type: ignore[arg-type]
        mixer=MIXER,
        warm_start=trial.warm_start,
        rng=rng,
        labels=trial.problem.names if keyed else None,
        noise_key=noise_key if keyed else None,
    )


# ------------------------------------------------------------------------------- the alignment


@dataclass(frozen=True)
class Reading:
    """One job in its own gauge-corrected basis, normalised: what the attacker averages."""

    signs: FloatArray  # the gauge the attacker inferred (per qubit ±1)
    h: FloatArray
    j: FloatArray  # symmetric, zero diagonal
    warm: FloatArray


def read(view: SentView) -> Reading:
    """Invert the gauge from the coupling signs and normalise by the mean coupling."""
    full = view.couplings + view.couplings.T
    _, vectors = np.linalg.eigh(np.sign(full))
    signs = np.where(vectors[:, -1] >= 0.0, 1.0, -1.0)
    j = full * np.outer(signs, signs)
    unit = float(j[np.triu_indices(j.shape[0], 1)].mean()) or 1.0
    assert view.warm_start is not None
    warm = np.where(signs < 0.0, 1.0 - view.warm_start, view.warm_start)
    return Reading(signs, view.h * signs / unit, j / unit, warm)


def _complement(reading: Reading) -> Reading:
    return replace(reading, h=-reading.h, warm=1.0 - reading.warm)


def align(
    reading: Reading, reference: Reading, rounds: int = 12, known: IntArray | None = None
) -> tuple[IntArray, Reading]:
    """Qubit ``a`` of ``reading`` to qubit ``perm[a]`` of ``reference``, best of both complements.

    ``known``: the true permutation (the oracle: only the complement is chosen).
    Returns the permutation and the reading moved onto the reference's qubits.
    """
    best: tuple[float, IntArray, Reading] | None = None
    n = reference.h.size
    iu = np.triu_indices(n, 1)
    var_j = float(reference.j[iu].var()) or 1.0
    var_h = float(reference.h.var()) or 1.0
    var_w = float(reference.warm.var()) or 1.0
    for candidate in (reading, _complement(reading)):
        node = (candidate.h[:, None] - reference.h[None, :]) ** 2 / var_h
        node = node + (candidate.warm[:, None] - reference.warm[None, :]) ** 2 / var_w
        _, perm = linear_sum_assignment(node)
        if known is not None:
            perm = known
        for _ in range(0 if known is not None else rounds):
            # Cost of a -> b given the others where they are: node term plus the coupling row.
            moved = reference.j[:, perm]  # moved[b, c] = J_ref[b, perm[c]]
            rows = ((candidate.j[:, None, :] - moved[None, :, :]) ** 2).sum(axis=2) / var_j
            _, updated = linear_sum_assignment(node + rows)
            if np.array_equal(updated, perm):
                break
            perm = updated
        inverse = np.argsort(perm)
        aligned = Reading(
            signs=candidate.signs[inverse],
            h=candidate.h[inverse],
            j=candidate.j[np.ix_(inverse, inverse)],
            warm=candidate.warm[inverse],
        )
        cost = float(
            ((aligned.h - reference.h) ** 2).sum() / var_h
            + ((aligned.warm - reference.warm) ** 2).sum() / var_w
            + ((aligned.j - reference.j)[iu] ** 2).sum() / var_j
        )
        if best is None or cost < best[0]:
            best = (cost, perm, aligned)
    assert best is not None
    return best[1], best[2]


def aligned_readings(
    views: Sequence[SentView], keys: Sequence[ObfuscationKey] | None = None, passes: int = 4
) -> tuple[list[Reading], list[IntArray]]:
    """Every job moved onto the first job's qubits (gauge-corrected, normalised).

    With ``keys`` the jobs are lined up by their keys (the oracle: a perfect aligner, an upper
    bound on any attacker's alignment); otherwise by :func:`align`, against the first job, then
    ``passes − 1`` times against the average of the aligned jobs.

    Returns the aligned readings and, per job, where its qubits went among the first job's.
    """
    readings = [read(view) for view in views]
    reference = readings[0]
    perms: list[IntArray] = []
    stack: list[Reading] = []
    for _ in range(1 if keys is not None else passes):
        perms = [np.arange(reference.h.size)]
        stack = [readings[0]]
        for index, reading in enumerate(readings[1:], start=1):
            known = None if keys is None else true_alignment(keys[index], keys[0])
            perm, moved = align(reading, reference, known=known)
            perms.append(perm)
            stack.append(moved)
        reference = mean_reading(stack)
    return stack, perms


def mean_reading(stack: Sequence[Reading]) -> Reading:
    """The average of aligned readings (in the first one's gauge)."""
    return Reading(
        signs=stack[0].signs,
        h=np.mean([r.h for r in stack], axis=0),
        j=np.mean([r.j for r in stack], axis=0),
        warm=np.mean([r.warm for r in stack], axis=0),
    )


def averaged_view(stack: Sequence[Reading], first: SentView, warm_noise: float) -> SentView:
    """The average of the aligned jobs, in the first job's sent basis: one view, less noise."""
    reference = mean_reading(stack)
    signs = reference.signs
    warm = np.clip(
        np.where(signs < 0.0, 1.0 - reference.warm, reference.warm), WARM_EPSILON, 1 - WARM_EPSILON
    )
    return SentView(
        h=reference.h * signs,
        couplings=np.triu(reference.j * np.outer(signs, signs), 1),
        warm_start=warm,
        hamming_weight=None,
        mixer=first.mixer,
        num_decoys=first.num_decoys,
        warm_noise=warm_noise,
    )


def difference_view(stack: Sequence[Reading], first: SentView) -> SentView:
    """The later half of the aligned jobs minus the earlier half: what keyed noise cannot hide.

    Keyed noise is the same in every job, so it cancels here; what is left is how the true
    problem moved between the two halves of the window (and the fresh noise). The result is
    handed to the attacks in the gauge-corrected basis, with a constant added to every coupling
    so that their gauge inversion reads it as such (the model's offset ``b`` absorbs it).
    """
    half = len(stack) // 2
    early, late = mean_reading(stack[:half]), mean_reading(stack[half:])
    delta_j = late.j - early.j
    iu = np.triu_indices(delta_j.shape[0], 1)
    lift = 50.0 * float(np.abs(delta_j[iu]).max() or 1.0)
    return SentView(
        h=late.h - early.h,
        couplings=np.triu(delta_j + lift, 1),
        warm_start=None,
        hamming_weight=None,
        mixer=first.mixer,
        num_decoys=first.num_decoys,
        warm_noise=0.0,
    )


@functools.cache
def difference_dictionary(early: tuple[int, ...], late: tuple[int, ...]) -> tuple[Candidate, ...]:
    """The public estimates of the later days minus those of the earlier days (the attacker knows them)."""
    before, after = rolling_dictionary(early), rolling_dictionary(late)
    return tuple(
        Candidate(b.covariance - a.covariance, b.mean - a.mean, f"change of {a.label}")
        for a, b in zip(before, after, strict=True)
    )


def true_alignment(key: ObfuscationKey, first: ObfuscationKey) -> IntArray:
    """Where each qubit of a job carries the variable that the first job carries on which qubit."""
    perm = np.arange(key.num_qubits)
    perm[np.array(key.positions)] = np.array(first.positions)
    return perm


def alignment_accuracy(perms: Sequence[IntArray], keys: Sequence[ObfuscationKey]) -> float:
    """Share of real variables whose qubit in job j was lined up with its qubit in the first job."""
    first = np.array(keys[0].positions)
    hits = []
    for perm, key in zip(perms[1:], keys[1:], strict=True):
        hits.append(np.mean(perm[np.array(key.positions)] == first))
    return float(np.mean(hits)) if hits else 1.0


# ---------------------------------------------------------------------------------------- runs


def daily_drift(jobs: Sequence[Trial]) -> tuple[float, float]:
    """How much the true fields and couplings move from one day to the next, in their spreads.

    The mean over consecutive days of ``std(Δh)/spread(h)`` and ``std(ΔJ)/spread(J)``: what keyed
    noise would lay bare in day-to-day differences, were none of the noise fresh.
    """
    n = jobs[0].ising.num_qubits
    iu = np.triu_indices(n, 1)
    fields, couplings = [], []
    for before, after in itertools.pairwise(jobs):
        fields.append(np.std(after.ising.h - before.ising.h) / np.std(after.ising.h))
        delta = (after.ising.couplings - before.ising.couplings)[iu]
        couplings.append(np.std(delta) / np.std(after.ising.couplings[iu]))
    return float(np.mean(fields)), float(np.mean(couplings))


def effective_warm_noise(level: str, scheme: str, k: int) -> float:
    """The warm-start noise left after averaging k jobs (the attacker knows the scheme)."""
    settings = LEVELS[level]  # type: ignore[index]
    share = settings.keyed_share if scheme == "keyed" else 0.0
    return float(settings.warm_noise * np.sqrt(share + (1.0 - share) / k))


def run_trial(
    t: int,
    *,
    assets: int,
    ks: tuple[int, ...],
    levels: tuple[str, ...],
    seed: int,
    progress: bool = False,
    scenarios: tuple[str, ...] = SCENARIOS,
    schemes: tuple[str, ...] = SCHEMES,
    runs: frozenset[tuple[str, str]] | None = None,
) -> list[dict[str, object]]:
    """Every (scenario, scheme, level, k, aligner, attack input) of one client (trial).

    ``runs`` keeps only those (aligner, kind) pairs of :func:`plan`. Seeded: the same trial gives
    the same figures (the client's noise key is derived from the seed; the attacker never sees it).
    """
    rows: list[dict[str, object]] = []
    most = max(ks)
    for scenario in scenarios:
        jobs = client_jobs(seed * 1000 + t, assets, most, scenario)
        ends = tuple(job.end for job in jobs)
        drift = daily_drift(jobs) if scenario == "rolling" else (0.0, 0.0)
        for scheme in schemes:
            noise_key = NoiseKey(hashlib.sha256(f"leakage-jobs/{seed}/{t}".encode()).digest())
            for level in levels:
                rng = np.random.default_rng(
                    [seed, t, SCENARIOS.index(scenario), SCHEMES.index(scheme), len(level)]
                )
                sent = [obfuscated(job, level, scheme, noise_key, rng) for job in jobs]
                views = [observe(problem, MIXER, level, rng) for problem, _ in sent]
                keys = [key for _, key in sent]
                tickers = jobs[0].tickers
                for k in ks:
                    if k == 1 and scenario == "rolling":
                        continue  # one job is one job: the "same" row says it
                    for aligner, kind in plan(k, scenario):
                        if runs is not None and (aligner, kind) not in runs:
                            continue
                        started = time.perf_counter()
                        view, candidates, align_rate = attack_input(
                            views[:k], keys[:k], ends[:k], scenario, aligner, kind,
                            effective_warm_noise(level, scheme, k),
                        )  # fmt: skip
                        found = attack(view, candidates, rng)
                        rates = {
                            n: reidentified(labels, keys[0], tickers) for n, labels in found.labels.items()
                        }
                        rows.append(
                            {
                                "scenario": scenario,
                                "scheme": scheme,
                                "level": level,
                                "k": k,
                                "aligner": aligner,
                                "kind": kind,
                                "align": align_rate,
                                "drift_h": drift[0],
                                "drift_j": drift[1],
                                **rates,
                            }
                        )
                        if progress:
                            elapsed = time.perf_counter() - started
                            print(
                                f"# trial {t} {scenario} {scheme} {level} k={k} {aligner} {kind}: "
                                f"align {align_rate:.2f} { {n: round(r, 2) for n, r in rates.items()} } "
                                f"{elapsed:.0f} s",
                                flush=True,
                            )
    return rows


def plan(k: int, scenario: str) -> list[tuple[str, str]]:
    """(aligner, attack kind) pairs to run for k jobs of a scenario."""
    if k == 1:
        return [("single", "single job")]
    runs = [("matched", "average"), ("oracle", "average")]
    if scenario == "rolling":
        runs.append(("oracle", "difference"))
    return runs


def attack_input(
    views: Sequence[SentView],
    keys: Sequence[ObfuscationKey],
    ends: Sequence[int],
    scenario: str,
    aligner: str,
    kind: str,
    warm_noise: float,
) -> tuple[SentView, tuple[Candidate, ...], float]:
    """The view the attacks get, their dictionary, and the alignment rate reached."""
    if len(views) == 1:
        return views[0], dictionary(ends[0]), 1.0
    stack, perms = aligned_readings(views, keys if aligner == "oracle" else None)
    rate = alignment_accuracy(perms, keys)
    if kind == "difference":
        half = len(views) // 2
        return (
            difference_view(stack, views[0]),
            difference_dictionary(tuple(ends[:half]), tuple(ends[half:])),
            rate,
        )
    candidates = rolling_dictionary(tuple(ends)) if scenario == "rolling" else dictionary(ends[0])
    return averaged_view(stack, views[0], warm_noise), candidates, rate


def main(argv: Sequence[str] | None = None) -> None:
    """Run and print the table."""
    parser = argparse.ArgumentParser(description="Re-identification over k jobs of one client")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--assets", type=int, default=16)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--levels", nargs="+", default=["standard"])
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=SCHEMES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    work = functools.partial(
        run_trial,
        assets=args.assets,
        ks=tuple(args.ks),
        levels=tuple(args.levels),
        seed=args.seed,
        progress=args.progress,
        schemes=tuple(args.schemes),
    )
    if args.jobs > 1 and args.trials > 1:
        with multiprocessing.get_context("fork").Pool(min(args.jobs, args.trials)) as pool:
            per_trial = pool.map(work, range(args.trials), chunksize=1)
    else:
        per_trial = [work(t) for t in range(args.trials)]
    rows = [row for trial in per_trial for row in trial]
    print(
        f"# Re-identification over k jobs of one client: N = {args.assets} of 20 stocks, B = N/2, "
        f"mixer {MIXER}, "
        f"{args.trials} clients (seed {args.seed}); bar 2/N = {200 / args.assets:.1f} %"
    )
    print(f"# {machine()}, numpy {np.__version__}; {time.perf_counter() - started:.0f} s")
    headers = [
        "window",
        "noise",
        "level",
        "k",
        "jobs lined up by",
        "aligned",
        "attacks run on",
        *[f"re-id {a}" for a in ATTACKS],
        "**re-id best**",
    ]
    rolling = [r for r in rows if r["scenario"] == "rolling"]
    if rolling:
        share = LEVELS["standard"].keyed_share
        drift_h = float(np.mean([float(r["drift_h"]) for r in rolling]))  # type: ignore[arg-type]
        drift_j = float(np.mean([float(r["drift_j"]) for r in rolling]))  # type: ignore[arg-type]
        fresh_h = np.sqrt(1 - share) * LEVELS["standard"].field_noise
        fresh_j = np.sqrt(1 - share) * LEVELS["standard"].coupling_noise
        print(
            f"# day-to-day drift of the true problem: fields {drift_h:.3f}, couplings {drift_j:.3f} spreads; "
            f"fresh noise per job at standard: fields {fresh_h:.2f}, couplings {fresh_j:.2f} spreads"
        )
    for line in markdown_header(headers):
        print(line)
    groups: dict[tuple[object, ...], list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault(
            (row["scenario"], row["scheme"], row["level"], row["k"], row["aligner"], row["kind"]), []
        ).append(row)
    for (scenario, scheme, level, k, aligner, kind), members in groups.items():
        means = {
            a: float(np.mean([float(m[a]) for m in members]))  # type: ignore[arg-type]
            for a in ATTACKS
            if a in members[0]
        }
        align_rate = float(np.mean([float(m["align"]) for m in members]))  # type: ignore[arg-type]
        cells = [
            "same" if scenario == "same" else "rolling (daily)",
            scheme,
            level,
            k,
            "–" if k == 1 else ("the keys (perfect)" if aligner == "oracle" else "matching"),
            "–" if k == 1 else f"{100 * align_rate:.0f} %",
            {"single job": "one job", "average": "the average", "difference": "late − early half"}[str(kind)],
            *[f"{100 * means[a]:.1f} %" if a in means else "–" for a in ATTACKS],
            f"**{100 * max(means.values()):.1f} %**",
        ]
        print(markdown_row(cells))


if __name__ == "__main__":
    main()
