"""The detached runner process: ``python -m qhybrid.backends.executors run <task_dir>``.

It runs one local-simulator task of :class:`~qhybrid.backends.detached.DetachedTaskRunner` with
the SDK its executor names. Kept apart from the runner so that the runner (which the Braket and
IBM adapters use) does not import those adapters back.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qhybrid.backends.braket import run_local_simulation
from qhybrid.backends.detached import BRAKET_EXECUTORS, IBM_EXECUTOR_PREFIX, check_executor, run_task
from qhybrid.backends.ibm import run_fake_backend


def execute(spec: dict[str, Any]) -> tuple[dict[str, int], dict[str, object]]:
    """Run one task's program with the SDK its executor names (the adapters import their SDKs lazily)."""
    executor = str(spec["executor"])
    program = str(spec["program"])
    shots = int(spec["shots"])
    options = spec.get("options") or {}
    check_executor(executor)
    if executor in BRAKET_EXECUTORS:
        return run_local_simulation(executor, program, shots)
    seed = options.get("seed")
    return run_fake_backend(
        executor[len(IBM_EXECUTOR_PREFIX) :], program, shots, seed=seed if isinstance(seed, int) else None
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the runner process: ``run <task_dir>``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "run":
        print("usage: python -m qhybrid.backends.executors run <task_dir>", file=sys.stderr)
        return 2
    return run_task(Path(args[1]), execute)


if __name__ == "__main__":
    raise SystemExit(main())
