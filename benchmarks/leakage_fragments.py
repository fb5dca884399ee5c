"""Re-identification on fragments: what the cloud learns from a decomposed job's sub-problems.

A decomposed job never sends its whole problem: each provider task carries one sub-problem of
``k`` assets (``jobs/subproblems.py``), obfuscated under its own key. The sub-problem's couplings
are ``Σ_SS`` (a block of the true covariance), but its fields carry returns shifted by the fixed
assets' pull (``μ_S − 2q Σ_SF x_F``) and its budget is the held count inside the fragment.

Setup of a trial (seeded, as in :mod:`benchmarks.leakage`): all 20 stocks of the bundled S&P 500
sample in a random order, a random window and month end, Ledoit-Wolf ``Σ``, budget 10, the
balanced risk aversion. The decomposition's classical start (greedy + swap-move annealing) is
computed and its first round's sub-problems of ``k`` assets are chosen exactly as a job would
choose them; each is obfuscated at every level and attacked with the attacks of
:mod:`benchmarks.leakage` (same public dictionary of the 20 stocks' estimates, Kerckhoffs).

Reference rows: a whole ``k``-asset problem (a job of ``k`` of the 20 stocks, sent in one
piece), attacked the same way. ``chance`` is 1/20.

Run: ``.venv/bin/python -m benchmarks.leakage_fragments [--trials 6] [--size 8] [--levels ...]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np

from benchmarks.leakage import (
    CONTROL,
    Trial,
    attack,
    dictionary,
    make_trial,
    obfuscate_for,
    observe,
    reidentified,
)
from benchmarks.report import machine, markdown_header, markdown_row
from qhybrid.portfolio.decomposition import choose_subproblems, classical_start, restrict


def fragments(trial: Trial, size: int, count: int, seed: int) -> list[Trial]:
    """The first round's sub-problems of a decomposed job on ``trial``, as trials of their own."""
    start, _ = classical_start(trial.problem, seconds=0.3, seed=seed)
    bits = np.array(start.bits, dtype=np.uint8)
    parts = choose_subproblems(
        trial.problem, bits, size=size, count=count, rng=np.random.default_rng([seed, 1])
    )
    out: list[Trial] = []
    for indices in parts:
        sub = restrict(trial.problem, bits, indices)
        qubo, _ = sub.problem.to_qubo()
        out.append(
            Trial(
                problem=sub.problem,
                tickers=trial.tickers[list(indices)],
                end=trial.end,
                ising=qubo.to_ising(),
                warm_start=sub.problem.relaxation(),
            )
        )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Attack whole problems and fragments of the same size; print the table."""
    parser = argparse.ArgumentParser(description="Re-identification on a decomposed job's fragments")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--size", type=int, default=8, help="assets per sub-problem")
    parser.add_argument("--parts", type=int, default=2, help="fragments attacked per trial")
    parser.add_argument("--levels", nargs="+", default=[CONTROL, "off", "standard", "high"])
    parser.add_argument("--mixer", default="x-warm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rates: dict[tuple[str, str], dict[str, list[float]]] = {}
    for t in range(args.trials):
        whole_trial = make_trial(args.seed * 1000 + t, args.size)
        universe = make_trial(args.seed * 1000 + t, 20)
        kinds = [("whole problem", whole_trial)] + [
            ("fragment", part) for part in fragments(universe, args.size, args.parts, args.seed * 1000 + t)
        ]
        for kind, trial in kinds:
            candidates = dictionary(trial.end)
            for index, level in enumerate(args.levels):
                rng = np.random.default_rng([args.seed, t, index, len(kind), int(trial.tickers.sum())])
                sent, key = obfuscate_for(trial, level, args.mixer, rng)
                found = attack(observe(sent, args.mixer, level, rng), candidates, rng)
                bucket = rates.setdefault((kind, level), {})
                for name, labels in found.labels.items():
                    bucket.setdefault(name, []).append(reidentified(labels, key, trial.tickers))
    names = sorted({name for bucket in rates.values() for name in bucket})
    print(
        f"# Re-identification on fragments: sub-problems of {args.size} of 20 S&P 500 stocks (budget 10), "
        f"{args.parts} per trial, vs whole {args.size}-asset problems; {args.trials} trials "
        f"(seed {args.seed}), mixer {args.mixer}"
    )
    print(f"# {machine()}; {time.perf_counter() - started:.0f} s")
    lines = markdown_header(
        ["sent", "level", "problems", *[f"re-id {n}" for n in names], "re-id best", "chance"]
    )
    for kind in ("whole problem", "fragment"):
        for level in args.levels:
            bucket = rates.get((kind, level), {})
            means = {n: float(np.mean(v)) for n, v in bucket.items()}
            count = len(next(iter(bucket.values()), []))
            lines.append(
                markdown_row(
                    [
                        kind,
                        level,
                        count,
                        *[f"{100 * means[n]:.1f} %" if n in means else "–" for n in names],
                        f"{100 * max(means.values()):.1f} %" if means else "–",
                        f"{100 / 20:.1f} %",
                    ]
                )
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
