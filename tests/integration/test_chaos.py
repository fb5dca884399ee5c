"""A bounded chaos test: 100 jobs while workers are killed -9 every few seconds and the test's own
PostgreSQL and Redis (append-only file) are each killed -9 and restarted mid-run. Every job must
complete and the provider must see one submission per job. ``benchmarks.chaos`` runs 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.chaos import run_chaos

pytestmark = pytest.mark.integration


# About 40 s on an idle 2-core machine; a machine shared with other test runs may take several times that.
@pytest.mark.timeout(900)
def test_chaos_every_job_completes_and_none_is_submitted_twice(tmp_path: Path) -> None:
    report = run_chaos(tmp_path, jobs=100, workers=3, kill_every=3.0, timeout=600)
    timeline = "\n".join(report.events)
    # The chaos really happened, mid-run.
    assert report.database_kills == 1, timeline
    assert report.redis_kills == 1, timeline
    assert report.worker_kills >= 3, timeline
    # 100 % completed, no duplicate provider submission.
    assert report.jobs == 100
    assert report.states == {"COMPLETED": 100}, f"{report.states}\n{timeline}\n{report.logs}"
    # Every answer from the QPU's samples: a classical fallback would complete a job it lost.
    assert set(report.sources) <= {"quantum", "quantum+refinement"}, report.sources
    assert report.tasks_per_job == {1: 100}
    assert report.posts_per_token == {1: 100}
    assert report.duplicate_submissions == 0
