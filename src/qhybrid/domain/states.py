"""The job state machine and the provider task's states: the states, their transitions, named sets.

```
ACCEPTED -> PREPARING -> SUBMITTING -> SUBMITTED -> REMOTE_QUEUED -> REMOTE_RUNNING -> FINALIZING -> COMPLETED
every non-terminal state -> FAILED | CANCELLED;  a failed remote task with attempts left -> SUBMITTING
PREPARING | SUBMITTING | remote states -> FINALIZING with a fallback reason: the classical answer
```
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema


class JobState(StrEnum):
    """Where a job is in its journey. The API shows the lower-case name."""

    ACCEPTED = "ACCEPTED"
    PREPARING = "PREPARING"
    SUBMITTING = "SUBMITTING"
    SUBMITTED = "SUBMITTED"
    REMOTE_QUEUED = "REMOTE_QUEUED"
    REMOTE_RUNNING = "REMOTE_RUNNING"
    FINALIZING = "FINALIZING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def api_name(self) -> str:
        """The state as the API shows it (``remote_queued``)."""
        return self.value.lower()


#: The status names the API shows, in journey order.
STATUS_NAMES: tuple[str, ...] = tuple(state.api_name for state in JobState)

#: A :class:`JobState` as the API shows it: the lower-case name, documented as an enum.
JobStatus = Annotated[
    JobState,
    # Read back from JSON as well: the API's lower-case name gives the state.
    BeforeValidator(
        lambda value: value.upper() if isinstance(value, str) and value in STATUS_NAMES else value
    ),
    PlainSerializer(lambda state: state.api_name, return_type=str),
    WithJsonSchema({"type": "string", "enum": list(STATUS_NAMES), "title": "JobStatus"}),
]


def parse_status(name: str) -> JobState:
    """The state behind an API status name (``remote_queued``).

    Raises:
        ValueError: For a name that is no status.
    """
    if name not in STATUS_NAMES:
        raise ValueError(f"unknown status {name!r}; one of {', '.join(STATUS_NAMES)}")
    return JobState(name.upper())


#: States a job never leaves.
TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})

#: States in which the job waits on a provider task, polled with backoff.
REMOTE_STATES = frozenset({JobState.SUBMITTED, JobState.REMOTE_QUEUED, JobState.REMOTE_RUNNING})

#: States in which a provider task may exist and must be cancelled with the job.
HAS_REMOTE_TASK = REMOTE_STATES | {JobState.SUBMITTING}

_FORWARD: dict[JobState, frozenset[JobState]] = {
    JobState.ACCEPTED: frozenset({JobState.PREPARING}),
    # FINALIZING straight from PREPARING or SUBMITTING: the classical fallback, when the provider
    # cannot be used at all (unreachable for good, circuit too large, deadline passed).
    JobState.PREPARING: frozenset({JobState.SUBMITTING, JobState.FINALIZING}),
    JobState.SUBMITTING: frozenset({JobState.SUBMITTED, JobState.FINALIZING}),
    # A provider can report any state at the first poll: a short task may already be done.
    JobState.SUBMITTED: frozenset(
        {JobState.REMOTE_QUEUED, JobState.REMOTE_RUNNING, JobState.FINALIZING, JobState.SUBMITTING}
    ),
    JobState.REMOTE_QUEUED: frozenset({JobState.REMOTE_RUNNING, JobState.FINALIZING, JobState.SUBMITTING}),
    JobState.REMOTE_RUNNING: frozenset({JobState.FINALIZING, JobState.SUBMITTING}),
    JobState.FINALIZING: frozenset({JobState.COMPLETED}),
}

#: Every allowed transition: the forward path, plus FAILED and CANCELLED from any live state.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    state: (_FORWARD.get(state, frozenset()) | {JobState.FAILED, JobState.CANCELLED})
    if state not in TERMINAL_STATES
    else frozenset()
    for state in JobState
}


class TaskState(StrEnum):
    """Normalised state of a remote quantum task."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


#: States after which a task never changes again.
TERMINAL_TASK_STATES = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})

#: Terminal states without a result: the job may try another task.
UNSUCCESSFUL_TASK_STATES = TERMINAL_TASK_STATES - {TaskState.COMPLETED}


class InvalidTransitionError(ValueError):
    """A transition the state machine does not allow."""


def check_transition(source: JobState, target: JobState) -> None:
    """Raise if ``source -> target`` is not an allowed transition.

    Raises:
        InvalidTransitionError: With both state names in the message.
    """
    if target not in TRANSITIONS[source]:
        raise InvalidTransitionError(f"transition {source} -> {target} is not allowed")
