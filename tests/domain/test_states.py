from __future__ import annotations

import itertools

import pytest

from qhybrid.domain.states import (
    REMOTE_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    InvalidTransitionError,
    JobState,
    check_transition,
)

HAPPY_PATH = [
    JobState.ACCEPTED,
    JobState.PREPARING,
    JobState.SUBMITTING,
    JobState.SUBMITTED,
    JobState.REMOTE_QUEUED,
    JobState.REMOTE_RUNNING,
    JobState.FINALIZING,
    JobState.COMPLETED,
]


def test_happy_path_is_allowed_step_by_step() -> None:
    for source, target in itertools.pairwise(HAPPY_PATH):
        check_transition(source, target)


@pytest.mark.parametrize("state", [s for s in JobState if s not in TERMINAL_STATES])
def test_every_live_state_can_fail_or_be_cancelled(state: JobState) -> None:
    check_transition(state, JobState.FAILED)
    check_transition(state, JobState.CANCELLED)


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_terminal_states_never_move(state: JobState) -> None:
    assert TRANSITIONS[state] == frozenset()
    for target in JobState:
        with pytest.raises(InvalidTransitionError, match=state.value):
            check_transition(state, target)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (JobState.ACCEPTED, JobState.SUBMITTING),  # no skipping preparation
        (JobState.PREPARING, JobState.SUBMITTED),  # no skipping the token write
        (JobState.REMOTE_RUNNING, JobState.REMOTE_QUEUED),
        (JobState.FINALIZING, JobState.SUBMITTING),
        (JobState.ACCEPTED, JobState.COMPLETED),
        (JobState.ACCEPTED, JobState.FINALIZING),
    ],
)
def test_shortcuts_are_refused(source: JobState, target: JobState) -> None:
    with pytest.raises(InvalidTransitionError):
        check_transition(source, target)


def test_remote_states_may_resubmit_after_a_failed_task() -> None:
    for state in REMOTE_STATES:
        check_transition(state, JobState.SUBMITTING)


def test_the_classical_fallback_can_start_from_any_working_state() -> None:
    for state in (JobState.PREPARING, JobState.SUBMITTING, *REMOTE_STATES):
        check_transition(state, JobState.FINALIZING)


def test_api_names_are_lower_case() -> None:
    assert JobState.REMOTE_QUEUED.api_name == "remote_queued"
    assert {s.api_name for s in JobState} >= {"accepted", "completed", "failed", "cancelled"}
