"""Which job the current egress belongs to, carried without widening the backend contract.

The backend adapters' methods (``submit``, ``status``...) take no job id, and they should not:
the id is bookkeeping of the trusted zone, not part of what a provider needs. The worker sets it
around the adapter calls with :func:`current_job`, and :class:`~qhybrid.gateway.egress.EgressClient`
and the SDK hooks read it back with :func:`get_current_job` to label their audit entries.

A :class:`contextvars.ContextVar` rather than a thread-local: it follows the code through
``contextvars.copy_context().run`` and asyncio tasks, and each thread starts with the default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_CURRENT_JOB: ContextVar[str | None] = ContextVar("qhybrid_egress_job", default=None)


@contextmanager
def current_job(job_id: str | None) -> Iterator[None]:
    """Label every egress inside the ``with`` block with ``job_id``.

    Blocks nest: the previous value comes back on exit, even when the block raises.

    Args:
        job_id: The job the requests are made for; ``None`` for work of no job.

    Yields:
        Nothing; the label applies while the block runs.
    """
    token = _CURRENT_JOB.set(job_id)
    try:
        yield
    finally:
        _CURRENT_JOB.reset(token)


def get_current_job() -> str | None:
    """The job id set by the innermost active :func:`current_job`, or ``None``."""
    return _CURRENT_JOB.get()
