"""A wall-clock budget for a stretch of work, checked where the work can stop cleanly.

PREPARING (estimate → formulate → obfuscate → angles → compile) runs inside
``time_budget(QHYBRID_PREPARE_SECONDS, ...)``. The pipeline checks it between its steps, and the
angle search at every evaluation of its objective, which is where the time goes; a check costs a
clock read. Past the budget, :class:`TimeBudgetExceededError` (permanent) ends the step: the job
answers classically with the reason, or fails with it when ``options.fallback`` is false. Nothing
is killed mid-step and no state is left behind, so a worker is never blocked for longer than the
budget plus one evaluation (or one transpilation, the one step that cannot be interrupted; its
size is bounded by ``QHYBRID_MAX_QUBITS``).

The budget is held in a context variable: it applies to the thread (or task) that set it, so the
worker's other threads are not affected.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from qhybrid.domain.errors import PermanentError


class TimeBudgetExceededError(PermanentError):
    """The work took longer than its budget; permanent, since trying again would take as long."""


@dataclass(frozen=True)
class _Budget:
    deadline: float
    seconds: float
    what: str


_current: ContextVar[_Budget | None] = ContextVar("qhybrid_time_budget", default=None)


@contextlib.contextmanager
def time_budget(seconds: float, what: str) -> Iterator[None]:
    """Run the block under a budget of ``seconds``; ``what`` names it in the error."""
    token = _current.set(_Budget(time.monotonic() + seconds, seconds, what))
    try:
        yield
    finally:
        _current.reset(token)


def check_budget(where: str) -> None:
    """Raise if the current budget (if any) is spent.

    Args:
        where: The step being run, for the message.

    Raises:
        TimeBudgetExceededError: Naming the budget and the step.
    """
    budget = _current.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise TimeBudgetExceededError(f"{budget.what} took longer than {budget.seconds:g} s (in {where})")
