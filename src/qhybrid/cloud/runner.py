"""The emulated QPU: one background thread that runs queued tasks one at a time, oldest first."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Protocol

from qhybrid.cloud.config import CloudConfig
from qhybrid.cloud.faults import FaultInjector
from qhybrid.cloud.sampler import ProgramError, SimulationError, SimulationOutcome, simulate
from qhybrid.cloud.store import TaskRecord, TaskState, TaskStore

logger = logging.getLogger(__name__)


class Simulate(Protocol):
    """Executes a program; :func:`qhybrid.cloud.sampler.simulate` has this shape."""

    def __call__(self, program: str, *, shots: int, seed: int, max_qubits: int) -> SimulationOutcome:
        """Run ``program`` and return its counts."""
        ...


# Upper bound on any idle wait, so that a missed wake-up costs at most this much latency.
_IDLE_POLL_SECONDS = 1.0


def seed_for(task_id: str) -> int:
    """A simulator seed derived from the task id, so a task's outcome is reproducible."""
    return int.from_bytes(hashlib.sha256(task_id.encode("utf-8")).digest()[:4], "big")


class QpuRunner:
    """Moves tasks QUEUED → RUNNING → COMPLETED/FAILED in FIFO order on one thread.

    A task is taken once it has been QUEUED for ``queue_delay_seconds``, and stays RUNNING for at
    least ``run_delay_seconds``, so clients see every state. A task cancelled in the meantime is
    left CANCELLED: every transition is conditional on the state the runner expects.

    Args:
        store: Where tasks live.
        config: Delays and device facts.
        simulate_fn: Executes a program; :func:`qhybrid.cloud.sampler.simulate` by default.
        faults: Armed fault rules; a ``task_failed`` rule makes the next task that runs fail.
    """

    def __init__(
        self,
        store: TaskStore,
        config: CloudConfig,
        *,
        simulate_fn: Simulate = simulate,
        faults: FaultInjector | None = None,
    ) -> None:
        self._store = store
        self._config = config
        self._simulate = simulate_fn
        self._faults = faults
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Requeue tasks a previous process left RUNNING, then start the QPU thread."""
        if self._thread is not None:
            raise RuntimeError("runner already started")
        requeued = self._store.requeue_all_running()
        if requeued:
            logger.warning("requeued %d task(s) left RUNNING by a previous process", requeued)
        self._stop.clear()
        # daemon=True only as a last resort: stop() joins the thread on a clean shutdown.
        self._thread = threading.Thread(target=self._loop, name="qcloud-qpu", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Tell the runner the queue changed (a task arrived or was cancelled)."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread; a task interrupted while RUNNING goes back to QUEUED.

        A simulation in progress cannot be interrupted, so this waits up to ``timeout`` seconds.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("QPU thread still busy after %.1fs; abandoning it", timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:
                # A failure here is the emulator's own (e.g. the database); keep the QPU alive.
                logger.exception("QPU loop error")
                self._stop.wait(_IDLE_POLL_SECONDS)

    def _step(self) -> None:
        # Clear before looking, so a wake-up that arrives after the look is not lost.
        self._wake.clear()
        task = self._store.next_queued()
        if task is None:
            self._wake.wait(_IDLE_POLL_SECONDS)
            return
        wait = task.created_at + self._config.queue_delay_seconds - time.time()
        if wait > 0:
            # FIFO with one constant delay: the oldest task is also the first one due.
            self._wake.wait(min(wait, _IDLE_POLL_SECONDS))
            return
        if self._stop.is_set() or not self._store.mark_running(task.task_id, time.time()):
            return
        self._run(task)

    def _run(self, task: TaskRecord) -> None:
        started = time.monotonic()
        logger.info("task %s RUNNING (%d shots)", task.task_id, task.shots)
        program = self._store.program(task.task_id) or ""
        outcome: SimulationOutcome | None = None
        message: str | None = None
        injected = None if self._faults is None else self._faults.take_task_failure(task.task_id)
        try:
            if injected is not None:
                # The task still spends its run delay RUNNING, as a real device failure would.
                message = "injected fault: task_failed (the device failed while running the task)"
            else:
                outcome = self._simulate(
                    program,
                    shots=task.shots,
                    seed=seed_for(task.task_id),
                    max_qubits=self._config.num_qubits,
                )
        except (ProgramError, SimulationError) as exc:
            message = str(exc)
        except Exception as exc:
            logger.exception("unexpected simulator failure on task %s", task.task_id)
            message = f"internal simulator error: {type(exc).__name__}: {exc}"
        remaining = self._config.run_delay_seconds - (time.monotonic() - started)
        if remaining > 0 and self._stop.wait(remaining):
            # Shutting down mid-run: the next process runs the task again from the queue.
            self._store.requeue(task.task_id)
            logger.info("task %s requeued by shutdown", task.task_id)
            return
        if outcome is not None:
            result = {
                "counts": outcome.counts,
                # The seconds the device spent on the task (RUNNING, the run delay included), as a
                # provider reports the usage it bills: clients must not take their own queueing and
                # polling latency for the device's sampling time.
                "metadata": {
                    **outcome.metadata,
                    "device": task.device,
                    "usage_seconds": round(time.monotonic() - started, 6),
                },
            }
            changed = self._store.finish(
                task.task_id, state=TaskState.COMPLETED, now=time.time(), result=result
            )
            final = TaskState.COMPLETED
        else:
            changed = self._store.finish(
                task.task_id, state=TaskState.FAILED, now=time.time(), message=message
            )
            final = TaskState.FAILED
        if changed:
            logger.info("task %s %s", task.task_id, final)
        else:
            logger.info("task %s changed while running (cancelled); result dropped", task.task_id)
