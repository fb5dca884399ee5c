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
* ``keyed``: the default now: 80 % of the noise variance keyed to the client and the variables'
  identities (``proxy/keyed.py``), the same in every job; 20 % fresh.

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
import multiprocessing
import os
import secrets
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


def align(reading: Reading, reference: Reading, rounds: int = 12) -> tuple[IntArray, Reading]:
    """Qubit ``a`` of ``reading`` to qubit ``perm[a]`` of ``reference``, best of both complements.

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
        for _ in range(rounds):
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


def averaged_view(views: Sequence[SentView], warm_noise: float) -> tuple[SentView, list[IntArray]]:
    """Line every job up with the first and average; the result in the first job's sent basis.

    Returns the averaged view and, per job, where its qubits went among the first job's.
    """
    readings = [read(view) for view in views]
    reference = readings[0]
    perms: list[IntArray] = [np.arange(reference.h.size)]
    for _ in range(2):  # align to the first job, then to the average of the aligned jobs
        perms = [np.arange(reference.h.size)]
        stack = [readings[0]]
        for reading in readings[1:]:
            perm, moved = align(reading, reference)
            perms.append(perm)
            stack.append(moved)
        reference = Reading(
            signs=readings[0].signs,
            h=np.mean([r.h for r in stack], axis=0),
            j=np.mean([r.j for r in stack], axis=0),
            warm=np.mean([r.warm for r in stack], axis=0),
        )
    signs = readings[0].signs
    warm = np.clip(
        np.where(signs < 0.0, 1.0 - reference.warm, reference.warm), WARM_EPSILON, 1 - WARM_EPSILON
    )
    first = views[0]
    view = SentView(
        h=reference.h * signs,
        couplings=np.triu(reference.j * np.outer(signs, signs), 1),
        warm_start=warm,
        hamming_weight=None,
        mixer=first.mixer,
        num_decoys=first.num_decoys,
        warm_noise=warm_noise,
    )
    return view, perms


def alignment_accuracy(perms: Sequence[IntArray], keys: Sequence[ObfuscationKey]) -> float:
    """Share of real variables whose qubit in job j was lined up with its qubit in the first job."""
    first = np.array(keys[0].positions)
    hits = []
    for perm, key in zip(perms[1:], keys[1:], strict=True):
        hits.append(np.mean(perm[np.array(key.positions)] == first))
    return float(np.mean(hits)) if hits else 1.0


# ---------------------------------------------------------------------------------------- runs


def effective_warm_noise(level: str, scheme: str, k: int) -> float:
    """The warm-start noise left after averaging k jobs (the attacker knows the scheme)."""
    settings = LEVELS[level]  # type: ignore[index]
    share = settings.keyed_share if scheme == "keyed" else 0.0
    return float(settings.warm_noise * np.sqrt(share + (1.0 - share) / k))


def run_trial(
    t: int, *, assets: int, ks: tuple[int, ...], levels: tuple[str, ...], seed: int, progress: bool
) -> list[dict[str, object]]:
    """Every (scenario, scheme, level, k) of one client (trial)."""
    rows: list[dict[str, object]] = []
    most = max(ks)
    for scenario in SCENARIOS:
        jobs = client_jobs(seed * 1000 + t, assets, most, scenario)
        ends = tuple(job.end for job in jobs)
        for scheme in SCHEMES:
            noise_key = NoiseKey(secrets.token_bytes(32))  # the client's (deployment's) key
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
                    started = time.perf_counter()
                    if k == 1:
                        view, align_rate = views[0], 1.0
                        candidates = dictionary(ends[0])
                    else:
                        window = ends[:k] if scenario == "rolling" else (ends[0],)
                        view, perms = averaged_view(views[:k], effective_warm_noise(level, scheme, k))
                        align_rate = alignment_accuracy(perms, keys[:k])
                        candidates = (
                            rolling_dictionary(window) if scenario == "rolling" else dictionary(ends[0])
                        )
                    found = attack(view, candidates, rng)
                    rates = {
                        name: reidentified(labels, keys[0], tickers) for name, labels in found.labels.items()
                    }
                    rows.append(
                        {
                            "scenario": scenario,
                            "scheme": scheme,
                            "level": level,
                            "k": k,
                            "align": align_rate,
                            **rates,
                        }
                    )
                    if progress:
                        elapsed = time.perf_counter() - started
                        print(
                            f"# trial {t} {scenario} {scheme} {level} k={k}: align {align_rate:.2f} "
                            f"{ {n: round(r, 2) for n, r in rates.items()} } {elapsed:.0f} s",
                            flush=True,
                        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Run and print the table."""
    parser = argparse.ArgumentParser(description="Re-identification over k jobs of one client")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--assets", type=int, default=16)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--levels", nargs="+", default=["standard"])
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
    headers = ["window", "noise", "level", "k", "aligned", *[f"re-id {a}" for a in ATTACKS], "**re-id best**"]
    for line in markdown_header(headers):
        print(line)
    groups: dict[tuple[object, ...], list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["scheme"], row["level"], row["k"]), []).append(row)
    for (scenario, scheme, level, k), members in groups.items():
        means = {a: float(np.mean([float(m[a]) for m in members])) for a in ATTACKS}  # type: ignore[arg-type]
        align_rate = float(np.mean([float(m["align"]) for m in members]))  # type: ignore[arg-type]
        cells = [
            "same" if scenario == "same" else "rolling (daily)",
            scheme,
            level,
            k,
            "–" if k == 1 else f"{100 * align_rate:.0f} %",
            *[f"{100 * means[a]:.1f} %" for a in ATTACKS],
            f"**{100 * max(means.values()):.1f} %**",
        ]
        print(markdown_row(cells))


if __name__ == "__main__":
    main()
