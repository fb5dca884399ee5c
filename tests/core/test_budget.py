"""The time budget: checked between steps and inside the angle search, per thread."""

from __future__ import annotations

import threading

import pytest

from qhybrid.core.budget import TimeBudgetExceededError, check_budget, time_budget
from qhybrid.domain.errors import PermanentError
from qhybrid.domain.request import JobRequest
from qhybrid.jobs import pipeline
from qhybrid.quantum.spec import QaoaSpec
from tests.support.journey import REQUEST


def test_outside_a_budget_nothing_is_checked() -> None:
    check_budget("anywhere")


def test_a_spent_budget_stops_the_angle_search_at_its_next_evaluation() -> None:
    request = JobRequest.model_validate(REQUEST)
    formulation = pipeline.formulate(request, pipeline.estimate(request))
    obfuscated = pipeline.obfuscate(formulation, QaoaSpec(reps=1), "off")
    assert pipeline.plan(obfuscated, QaoaSpec(reps=1), seed=1).angles  # it runs without a budget
    with (
        time_budget(0.0, "PREPARING (QHYBRID_PREPARE_SECONDS)"),
        pytest.raises(
            TimeBudgetExceededError,
            match=r"PREPARING \(QHYBRID_PREPARE_SECONDS\) took longer than 0 s \(in the angle search\)",
        ) as caught,
    ):
        pipeline.plan(obfuscated, QaoaSpec(reps=1), seed=1)
    assert isinstance(caught.value, PermanentError)  # the journey falls back instead of retrying


def test_a_budget_applies_to_its_own_thread_only() -> None:
    errors: list[BaseException] = []

    def other() -> None:
        try:
            check_budget("the other thread")
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    with time_budget(0.0, "this thread"):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        with pytest.raises(TimeBudgetExceededError):
            check_budget("here")
    assert errors == []
