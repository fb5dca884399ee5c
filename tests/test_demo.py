"""The demo's run folders: one per run, the last few kept, a running one never deleted."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from qhybrid.demo import KEEP_RUNS, DemoRun, new_run


def test_each_run_has_its_own_folders_and_old_ones_go_unless_in_use(tmp_path: Path) -> None:
    folder = tmp_path / ".qhybrid-demo"
    runs: list[DemoRun] = []
    for index in range(KEEP_RUNS + 2):
        root = folder / f"old-{index}"
        (root / "cloud").mkdir(parents=True)
        os.utime(root, (index, index))  # oldest first
        runs.append(DemoRun(root))
    # The oldest run's cloud is still alive: it holds its lock.
    with (runs[0].cloud_dir / "cloud.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        run = new_run(folder)
    assert run.log_dir.is_dir() and run.root.parent == folder
    assert run.data_dir != run.cloud_dir
    left = {path.name for path in folder.iterdir()}
    # The new run and the newest KEEP_RUNS - 1 old ones stay, and the one still in use.
    expected = {run.root.name, runs[0].root.name} | {r.root.name for r in runs[-(KEEP_RUNS - 1) :]}
    assert left == expected
