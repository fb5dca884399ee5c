"""Chaos at scale: 500 jobs (default) while workers are killed -9 every few seconds and our own
PostgreSQL and Redis are killed -9 and restarted mid-run; prints what completed and what the
provider saw. The suite runs the same with 100 jobs (tests/integration/test_chaos.py).

    .venv/bin/python -m benchmarks.chaos [--jobs 500] [--workers 3] [--kill-every SECONDS]

By default the kill period adapts to the machine: three times the first workers' start-up (at least
3 s), so that a worker started in place of a killed one lives long enough to finish steps.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.report import machine, markdown_table
from tests.support.chaos import run_chaos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=3, help="worker processes (2 threads each)")
    parser.add_argument(
        "--kill-every",
        type=float,
        default=None,
        help="seconds between worker kills (default: 3 x the workers' start-up, at least 3)",
    )
    parser.add_argument("--database-kills", type=int, default=2)
    parser.add_argument("--redis-kills", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qhybrid-chaos-") as folder:
        report = run_chaos(
            Path(folder),
            jobs=args.jobs,
            workers=args.workers,
            kill_every=args.kill_every,
            database_kills=args.database_kills,
            redis_kills=args.redis_kills,
            timeout=args.timeout,
        )
    print(machine())
    print("\n".join(report.events))
    row = {
        "jobs": report.jobs,
        "completed": report.completed,
        "failed": report.states.get("FAILED", 0),
        "sources": ", ".join(f"{k} {v}" for k, v in sorted(report.sources.items())),
        "worker kills": report.worker_kills,
        "PostgreSQL kills": report.database_kills,
        "Redis kills": report.redis_kills,
        "provider POSTs": sum(n * k for n, k in report.posts_per_token.items()),
        "duplicate submissions": report.duplicate_submissions,
        "seconds": f"{report.seconds:.0f}",
        "jobs/s": f"{report.jobs / report.seconds:.2f}",
    }
    print("\n".join(markdown_table([row])))
    if report.completed != report.jobs or report.duplicate_submissions:
        print(report.logs[-6000:])
        raise SystemExit(1)


if __name__ == "__main__":
    main()
