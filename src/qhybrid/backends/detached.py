"""Local simulator tasks run in detached processes, so that they behave like remote tasks.

A worker that ran a simulation in its own process would lose it on a crash and could not tell a
slow task from a dead one. Here every task is a directory under the runner's root and is executed
by a child process started in its own session (``python -m qhybrid.backends.executors run
<task_dir>``): the child outlives the worker, and any worker, including one started after a
crash, finds the task again by id or by client token and reads its state from files.

Files of one task directory (JSON files are replaced atomically: written to a temporary file,
flushed to disk, then renamed over the old one, so readers never see half a file)::

    spec.json         executor, program, shots, client token, options, creation time
    state.json        QUEUED, RUNNING (with the runner's pid), COMPLETED, FAILED or CANCELLED
    result.json       counts (bit 0 first), shots, metadata; written before state COMPLETED
    runner.json       pid and start time of the runner, written by whoever launched it
    launch.claim      created exclusively by the one caller that launches the runner
    cancel.requested  created by cancel() before it stops the runner
    run.lock          locked (flock) by the runner for its whole life: a free lock on a RUNNING
                      task means the runner died, whatever happened to its pid since
    runner.log        the runner's stdout and stderr

The task id is derived from the client token, and the directory appears atomically (it is built
under a temporary name and renamed), so a second submission under the same token finds the first
one and starts nothing. Liveness relies on ``fcntl.flock`` and ``/proc``: this module is for
Linux (and other Unix systems, with a weaker pid check), on a local file system.

Executors:
    ``braket_sv``, ``braket_dm``: the Amazon Braket SDK's ``LocalSimulator`` (state vector or
        density matrix), see :func:`qhybrid.backends.braket.run_local_simulation`.
    ``ibm:<FakeName>``: qiskit-ibm-runtime's local testing mode on a fake backend with its noise
        model, see :func:`qhybrid.backends.ibm.run_fake_backend`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qhybrid.backends.base import (
    PermanentBackendError,
    QuantumBackend,
    TaskResult,
    TaskStatus,
    TransientBackendError,
)
from qhybrid.domain.states import TERMINAL_TASK_STATES, TaskState

#: Executors backed by the Braket SDK's local simulators.
BRAKET_EXECUTORS = frozenset({"braket_sv", "braket_dm"})

#: Prefix of the executors backed by qiskit-ibm-runtime fake backends (``ibm:FakeTorino``).
IBM_EXECUTOR_PREFIX = "ibm:"

#: How long a task may stay QUEUED without any trace of a runner before it is declared FAILED.
#: Generous: a loaded machine can take seconds just to start Python.
LAUNCH_GRACE_SECONDS = 60.0

#: How long cancel() waits for a killed runner to disappear.
_CANCEL_WAIT_SECONDS = 10.0

_TASK_ID = re.compile(r"^local-[0-9a-f]{32}$")
_IBM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INCOMING_PREFIX = ".incoming-"
# Half-built task directories older than this were left by a crash and can go.
_STALE_INCOMING_SECONDS = 3600.0

_SPEC = "spec.json"
_STATE = "state.json"
_RESULT = "result.json"
_RUNNER = "runner.json"
_CLAIM = "launch.claim"
_CANCEL = "cancel.requested"
_LOCK = "run.lock"
_LOG = "runner.log"


def task_id_for(client_token: str) -> str:
    """The task id a client token maps to: a digest, so any token gives a safe directory name."""
    return "local-" + hashlib.sha256(client_token.encode("utf-8")).hexdigest()[:32]


def check_executor(executor: str) -> None:
    """Check an executor name's syntax (whether a fake IBM backend exists is checked when it runs).

    Raises:
        PermanentBackendError: If the executor is not one this module runs.
    """
    if executor in BRAKET_EXECUTORS:
        return
    if executor.startswith(IBM_EXECUTOR_PREFIX) and _IBM_NAME.match(executor[len(IBM_EXECUTOR_PREFIX) :]):
        return
    raise PermanentBackendError(
        f"unknown local executor {executor!r}; expected one of {sorted(BRAKET_EXECUTORS)} "
        f"or '{IBM_EXECUTOR_PREFIX}<FakeBackendName>'"
    )


# --------------------------------------------------------------------------- file helpers


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically with ``data`` as JSON, flushed to disk first."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` if the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def _fsync_directory(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort: not every platform allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _state_record(state: TaskState, message: str | None = None, pid: int | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"state": state.value, "updated_at": time.time()}
    if message is not None:
        record["message"] = message
    if pid is not None:
        record["pid"] = pid
    return record


@contextlib.contextmanager
def _file_errors(task_id: str) -> Iterator[None]:
    """File-system failures as backend errors: I/O trouble may pass, unreadable files will not."""
    try:
        yield
    except OSError as exc:
        raise TransientBackendError(f"local task {task_id}: {exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:  # malformed JSON or records
        raise PermanentBackendError(f"local task {task_id}: unreadable task file: {exc}") from exc


# --------------------------------------------------------------------------- process checks


def _process_start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot, from ``/proc``), or ``None`` if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _process_alive(pid: int, start_ticks: int | None) -> bool:
    """Whether ``pid`` still runs and is the process that was recorded (not a reused pid)."""
    proc = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            stat = proc.read_text()
        except OSError:
            return False
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] in ("Z", "X"):  # exited, waiting to be reaped
            return False
        return start_ticks is None or int(fields[19]) == start_ticks
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_held(task_dir: Path) -> bool:
    """Whether a runner holds the task's lock, i.e. is alive and working on it."""
    try:
        fd = os.open(task_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the runner


class DetachedTaskRunner:
    """Runs local-simulator tasks in detached processes, one directory per task.

    All methods are safe to call from several threads and several processes at once, and safe
    to repeat.

    Args:
        root: Directory holding one sub-directory per task (created if missing), e.g.
            ``<data_dir>/local-tasks``.
        python: Interpreter that runs the tasks; the current one by default.
    """

    def __init__(self, root: Path, *, python: str | None = None) -> None:
        # Absolute: the detached runner starts in its own working directory.
        self._root = Path(root).resolve()
        self._python = python or sys.executable
        self._root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_incoming()

    @property
    def root(self) -> Path:
        """The directory holding the tasks."""
        return self._root

    def __repr__(self) -> str:
        return f"DetachedTaskRunner(root={str(self._root)!r})"

    # --- contract ----------------------------------------------------------------------------

    def submit(
        self, executor: str, program: str, shots: int, client_token: str, options: dict[str, Any]
    ) -> str:
        """Create the task for ``client_token`` and start its runner, unless it exists already.

        Args:
            executor: ``braket_sv``, ``braket_dm`` or ``ibm:<FakeName>``.
            program: OpenQASM 3 text in qhybrid's canonical dialect.
            shots: Number of shots, at least 1.
            client_token: The submission's idempotency token.
            options: JSON-serialisable executor options; ``seed`` (int) seeds the simulators that
                accept one (IBM fake backends; Braket's local simulators take no seed).

        Returns:
            The task id (the same for the same token, whatever the other arguments).

        Raises:
            PermanentBackendError: On an unknown executor, fewer than one shot or an empty token.
            TransientBackendError: If the task files cannot be written.
        """
        check_executor(executor)
        if not client_token:
            raise PermanentBackendError("the client token must not be empty")
        if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
            raise PermanentBackendError(f"shots must be a positive integer, got {shots!r}")
        task_id = task_id_for(client_token)
        task_dir = self._root / task_id
        try:
            if not task_dir.exists():
                self._create(task_dir, executor, program, shots, client_token, options)
            self._ensure_launched(task_dir)
        except OSError as exc:
            raise TransientBackendError(f"local task {task_id}: cannot write task files: {exc}") from exc
        return task_id

    def find(self, client_token: str) -> str | None:
        """The id of the task submitted under ``client_token``, or ``None``."""
        task_id = task_id_for(client_token)
        return task_id if (self._root / task_id / _SPEC).exists() else None

    def status(self, task_id: str) -> TaskStatus:
        """The task's state; a task whose runner died without finishing becomes FAILED.

        Raises:
            PermanentBackendError: If there is no such task.
        """
        with _file_errors(task_id):
            return self._status(task_id)

    def _status(self, task_id: str) -> TaskStatus:
        task_dir = self._task_dir(task_id)
        record = self._state(task_dir)
        state = TaskState(record["state"])
        if state not in TERMINAL_TASK_STATES and not self._runner_alive(task_dir, record):
            record = self._settle_dead_runner(task_dir)
            state = TaskState(record["state"])
        message = record.get("message")
        return TaskStatus(
            state=state,
            provider_state=state.value,
            message=message if isinstance(message, str) else None,
        )

    def result(self, task_id: str) -> TaskResult:
        """The counts of a COMPLETED task, bit 0 first.

        Raises:
            PermanentBackendError: If there is no such task, or it FAILED or was CANCELLED.
            TransientBackendError: If it has not finished yet.
        """
        with _file_errors(task_id):
            return self._result(task_id)

    def _result(self, task_id: str) -> TaskResult:
        status = self._status(task_id)
        if status.state is not TaskState.COMPLETED:
            detail = f": {status.message}" if status.message else ""
            error = f"local task {task_id} is {status.state.value}{detail}"
            if status.state in TERMINAL_TASK_STATES:
                raise PermanentBackendError(error)
            raise TransientBackendError(error + "; it has no result yet")
        data = _read_json(self._task_dir(task_id) / _RESULT)
        if data is None:
            raise PermanentBackendError(f"local task {task_id} is COMPLETED but its result file is missing")
        metadata = data.get("metadata")
        return TaskResult(
            counts={str(key): int(value) for key, value in data["counts"].items()},
            shots=int(data["shots"]),
            metadata=dict(metadata) if isinstance(metadata, dict) else {},
        )

    def cancel(self, task_id: str) -> None:
        """Stop the runner and mark the task CANCELLED; a finished task is left as it is.

        Raises:
            PermanentBackendError: If there is no such task.
            TransientBackendError: If the runner does not stop within a few seconds.
        """
        with _file_errors(task_id):
            self._cancel(task_id)

    def _cancel(self, task_id: str) -> None:
        task_dir = self._task_dir(task_id)
        if TaskState(self._state(task_dir)["state"]) in TERMINAL_TASK_STATES:
            return
        # Announced first: a runner that starts from now on exits at once, and status() calls
        # that see the runner die record CANCELLED rather than FAILED.
        (task_dir / _CANCEL).touch()
        deadline = time.monotonic() + _CANCEL_WAIT_SECONDS
        while True:
            record = self._state(task_dir)
            if TaskState(record["state"]) in TERMINAL_TASK_STATES:
                return  # finished (or was settled) before it could be stopped
            alive = [
                (pid, ticks)
                for pid, ticks in self._runner_pids(task_dir, record)
                if _process_alive(pid, ticks)
            ]
            for pid, _ in alive:
                # The runner leads its own session: the whole group goes, simulator threads and all.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            if not alive and not _lock_held(task_dir):
                break
            if time.monotonic() > deadline:
                raise TransientBackendError(f"local task {task_id}: the runner did not stop in time")
            time.sleep(0.05)
        if TaskState(self._state(task_dir)["state"]) not in TERMINAL_TASK_STATES:
            _write_json(task_dir / _STATE, _state_record(TaskState.CANCELLED, "cancelled on request"))

    # --- internals ---------------------------------------------------------------------------

    def _task_dir(self, task_id: str) -> Path:
        if not _TASK_ID.match(task_id):
            raise PermanentBackendError(f"{task_id!r} is not a local task id")
        task_dir = self._root / task_id
        if not (task_dir / _SPEC).exists():
            raise PermanentBackendError(f"local task {task_id} does not exist under {self._root}")
        return task_dir

    def _state(self, task_dir: Path) -> dict[str, Any]:
        record = _read_json(task_dir / _STATE)
        if record is None:
            raise PermanentBackendError(f"local task {task_dir.name} has no state file")
        return record

    def _create(
        self,
        task_dir: Path,
        executor: str,
        program: str,
        shots: int,
        client_token: str,
        options: dict[str, Any],
    ) -> None:
        """Build the task directory under a temporary name, then rename it into place."""
        incoming = Path(tempfile.mkdtemp(prefix=_INCOMING_PREFIX, dir=self._root))
        try:
            spec = {
                "executor": executor,
                "program": program,
                "shots": shots,
                "client_token": client_token,
                "options": dict(options),
                "created_at": time.time(),
            }
            _write_json(incoming / _SPEC, spec)
            _write_json(incoming / _STATE, _state_record(TaskState.QUEUED))
            (incoming / _LOCK).touch()
            try:
                os.rename(incoming, task_dir)
            except OSError:
                # Another caller created the task under the same token first: theirs stands.
                if not task_dir.exists():
                    raise
            else:
                _fsync_directory(self._root)
        finally:
            if incoming.exists():
                shutil.rmtree(incoming, ignore_errors=True)

    def _ensure_launched(self, task_dir: Path) -> None:
        """Start the runner once: only the caller that creates the claim file launches it.

        A caller that crashed between creating the task and claiming its launch leaves no claim,
        so the next submission under the same token launches it instead.
        """
        try:
            fd = os.open(task_dir / _CLAIM, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        os.close(fd)
        if TaskState(self._state(task_dir)["state"]) in TERMINAL_TASK_STATES:
            return  # cancelled before it ever started
        with open(task_dir / _LOG, "ab") as log:
            process = subprocess.Popen(
                [self._python, "-m", "qhybrid.backends.executors", "run", str(task_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=task_dir,
                close_fds=True,
                # Its own session: a signal aimed at the worker's process group does not reach
                # it, and cancel() can kill its whole group.
                start_new_session=True,
            )
        _write_json(
            task_dir / _RUNNER,
            {"pid": process.pid, "start_ticks": _process_start_ticks(process.pid), "started_at": time.time()},
        )
        # Reap the child when it exits so it does not linger as a zombie in this process; if this
        # process dies first, init adopts and reaps it.
        threading.Thread(target=process.wait, name=f"reap-{task_dir.name}", daemon=True).start()

    @staticmethod
    def _runner_pids(task_dir: Path, record: dict[str, Any]) -> list[tuple[int, int | None]]:
        """Pids (with start times when known) of the runner: the launcher's note, the runner's own."""
        pids: list[tuple[int, int | None]] = []
        runner = _read_json(task_dir / _RUNNER)
        if runner is not None and isinstance(runner.get("pid"), int):
            ticks = runner.get("start_ticks")
            pids.append((runner["pid"], ticks if isinstance(ticks, int) else None))
        pid = record.get("pid")
        if isinstance(pid, int) and all(pid != known for known, _ in pids):
            pids.append((pid, None))
        return pids

    def _runner_alive(self, task_dir: Path, record: dict[str, Any]) -> bool:
        """Whether a runner is (or may still be about to start) working on an unfinished task."""
        if _lock_held(task_dir):
            return True
        pids = self._runner_pids(task_dir, record)
        if pids:
            # A live runner that has not taken the lock yet is still starting up.
            return TaskState(record["state"]) is TaskState.QUEUED and any(
                _process_alive(pid, ticks) for pid, ticks in pids
            )
        # No trace of a runner yet: give a launch in progress time to record one.
        spec = _read_json(task_dir / _SPEC) or {}
        created = spec.get("created_at")
        age = time.time() - created if isinstance(created, int | float) else LAUNCH_GRACE_SECONDS + 1
        return age <= LAUNCH_GRACE_SECONDS

    def _settle_dead_runner(self, task_dir: Path) -> dict[str, Any]:
        """Record the end of a task whose runner is gone, unless it finished meanwhile."""
        # The runner writes its final state before it exits: read again, now that it is gone.
        record = self._state(task_dir)
        if TaskState(record["state"]) in TERMINAL_TASK_STATES:
            return record
        if (task_dir / _CANCEL).exists():
            record = _state_record(TaskState.CANCELLED, "cancelled on request")
        elif (task_dir / _RUNNER).exists() or "pid" in record:
            record = _state_record(
                TaskState.FAILED, f"runner exited without a result (see {task_dir / _LOG})"
            )
        else:
            record = _state_record(TaskState.FAILED, "runner was never started")
        _write_json(task_dir / _STATE, record)
        return record

    def _remove_stale_incoming(self) -> None:
        """Delete half-built task directories that crashed submissions left behind."""
        cutoff = time.time() - _STALE_INCOMING_SECONDS
        for path in self._root.glob(f"{_INCOMING_PREFIX}*"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- backend base


def seed_for(client_token: str) -> int:
    """A positive simulator seed derived from the client token, so a task is reproducible."""
    return int.from_bytes(hashlib.sha256(client_token.encode("utf-8")).digest()[:4], "big") | 1


class DetachedBackend(QuantumBackend):
    """A backend whose tasks run on this machine through a :class:`DetachedTaskRunner`.

    Subclasses say which executor runs the programs and describe the device in ``target()``.

    Args:
        name: The name requests use to select this backend.
        runner: Where the tasks live and run.
        executor: The runner's executor for this backend's programs.
    """

    def __init__(self, *, name: str, runner: DetachedTaskRunner, executor: str) -> None:
        check_executor(executor)
        self.name = name
        self._runner = runner
        self._executor = executor

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, executor={self._executor!r})"

    def submit(self, program: str, shots: int, client_token: str) -> str:
        """Run the program in a detached process; the same client token gives the same task."""
        return self._runner.submit(
            self._executor, program, shots, client_token, {"seed": seed_for(client_token)}
        )

    def find_task(self, client_token: str) -> str | None:
        """The task created under ``client_token``, or ``None``."""
        return self._runner.find(client_token)

    def status(self, task_id: str) -> TaskStatus:
        """The task's state, read from its files."""
        return self._runner.status(task_id)

    def result(self, task_id: str) -> TaskResult:
        """The counts of a COMPLETED task, bit 0 first."""
        return self._runner.result(task_id)

    def cancel(self, task_id: str) -> None:
        """Kill the task's runner; a finished task is left as it is."""
        self._runner.cancel(task_id)


# --------------------------------------------------------------------------- child process


#: Runs one task's spec: ``(counts with bit 0 first, metadata)``.
Executor = Callable[[dict[str, Any]], tuple[dict[str, int], dict[str, object]]]


def run_task(task_dir: Path, execute: Executor) -> int:
    """Execute one task (the body of the detached runner process).

    Args:
        task_dir: The task's directory.
        execute: Runs the spec's program (:func:`qhybrid.backends.executors.execute`).

    Returns:
        The process exit code: 0 when the task ended COMPLETED or was already finished.
    """
    task_dir = Path(task_dir)
    lock = open(task_dir / _LOCK, "a+b")  # noqa: SIM115 - held until the process exits
    # Blocking: a duplicate runner waits here, then finds the task finished and leaves.
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
    record = _read_json(task_dir / _STATE) or {}
    if (
        record.get("state") in {state.value for state in TERMINAL_TASK_STATES}
        or (task_dir / _CANCEL).exists()
    ):
        return 0
    _write_json(task_dir / _STATE, _state_record(TaskState.RUNNING, pid=os.getpid()))
    if (task_dir / _CANCEL).exists():
        return 0  # cancel() raced us: it sees the pid now and settles the task
    started = time.monotonic()
    try:
        spec = _read_json(task_dir / _SPEC)
        if spec is None:
            raise RuntimeError("spec.json is missing")
        counts, metadata = execute(spec)
        metadata = {
            **metadata,
            "executor": spec["executor"],
            "elapsed_seconds": round(time.monotonic() - started, 3),
        }
        _write_json(task_dir / _RESULT, {"counts": counts, "shots": int(spec["shots"]), "metadata": metadata})
        _write_json(task_dir / _STATE, _state_record(TaskState.COMPLETED))
    except Exception as exc:
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}".strip()
        _write_json(task_dir / _STATE, _state_record(TaskState.FAILED, message[:1000]))
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return 0
