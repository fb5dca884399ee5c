"""Compiled inner loops of the classical references (numba), compiled once per process.

The swap annealer's table step (:class:`qhybrid.portfolio.references._TableChains`) is a handful
of NumPy calls on all chains; run as NumPy, each call costs more in dispatch than in arithmetic
(about 10 µs a step for 512 chains). The kernel here does the same arithmetic on the same random
numbers, drawn by NumPy beforehand, so the chains are bit for bit those of the NumPy step (a test
compares them).

Compiling costs one to two seconds of CPU, once per process: at the first use, or earlier through
:func:`warm_up` (the worker calls it at start-up, so that no job's FINALIZING pays it). Nothing is
cached on disk: the source tree or the home directory may not be writable where a worker runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: ``table_steps(row, moves, exponentials, change, next_row, temperatures)``: see :func:`table_steps`.
TableSteps = Callable[
    [
        NDArray[np.int64],
        NDArray[np.int64],
        NDArray[np.float64],
        NDArray[np.float64],
        NDArray[np.int64],
        NDArray[np.float64],
    ],
    None,
]

_lock = threading.Lock()
_compiled: TableSteps | None = None


def _table_steps_py(
    row: NDArray[np.int64],
    moves: NDArray[np.int64],
    exponentials: NDArray[np.float64],
    change: NDArray[np.float64],
    next_row: NDArray[np.int64],
    temperatures: NDArray[np.float64],
) -> None:
    # Step by step, chain by chain (the chains are independent; this order keeps ``row`` and one
    # step's draws in the first-level cache). The comparison is the NumPy step's, operand for
    # operand: ``change[cell] <= temperature * exponential`` in double precision.
    for k in range(temperatures.size):
        temperature = temperatures[k]
        for c in range(row.size):
            cell = row[c] + moves[k, c]
            if change[cell] <= temperature * exponentials[k, c]:
                row[c] = next_row[cell]


def _compile() -> TableSteps:
    import numba  # a second or so to import: only where the annealer runs

    signature = "void(int64[::1], int64[:, ::1], float64[:, ::1], float64[::1], int64[::1], float64[::1])"
    # nogil: a worker's other threads run while a job anneals. No fastmath: it could reorder or
    # fuse the comparison's arithmetic, and the chains would no longer be the NumPy step's.
    compiled: Any = numba.njit(signature, nogil=True, cache=False)(_table_steps_py)
    return compiled  # type: ignore[no-any-return]


def table_steps() -> TableSteps:
    """The compiled table step, compiled on the first call in this process.

    ``table_steps()(row, moves, exponentials, change, next_row, temperatures)`` runs
    ``temperatures.size`` Metropolis steps of every chain in place: in step ``k`` chain ``c``
    proposes the cell ``row[c] + moves[k, c]`` and moves to ``next_row[cell]`` when
    ``change[cell] <= temperatures[k] * exponentials[k, c]``. ``row``, ``change``, ``next_row``
    and ``temperatures`` are contiguous vectors, ``moves`` and ``exponentials`` C-ordered
    ``(steps, chains)`` arrays.
    """
    global _compiled
    if _compiled is None:
        with _lock:
            if _compiled is None:
                _compiled = _compile()
    return _compiled


def warm_up() -> None:
    """Compile every kernel now (a worker's start-up), not in the first job that needs it."""
    table_steps()
