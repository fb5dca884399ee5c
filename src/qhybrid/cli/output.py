"""What the client commands print, and how they end: exit codes and one-line errors.

| exit | meaning |
|---|---|
| 0 | done: the job completed (or the command did what it says) |
| 1 | the job failed or was cancelled |
| 2 | bad input or refused: a usage error, an unreadable request file, or a 4xx from the API |
| 3 | could not reach the API, or it failed (5xx); for ``serve`` and ``worker``, the database |
| 4 | timeout: the job had not ended within ``--timeout`` |
| 5 | ``--require-quantum`` and the job completed with a classical fallback |
| 130 | interrupted (Ctrl-C); the job itself goes on |

Transitions are printed from the job's ``events`` (every one, once, with the time it happened),
never from what a poll happened to see.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import IntEnum
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from qhybrid.client import (
    ApiRequestError,
    ApiUnreachableError,
    ClassicalFallbackError,
    Client,
    JobCancelledError,
    JobDocument,
    JobEvent,
    JobFailedError,
    JobPage,
    JobTimeoutError,
    JobUpdate,
)
from qhybrid.domain.result import (
    Contribution,
    Decomposition,
    JobResult,
    Portfolio,
    QuantumRun,
    SamplerReport,
)


class ExitCode(IntEnum):
    """How a client command ends (the table is in the README and in ``qhybrid --help``)."""

    OK = 0
    JOB_UNSUCCESSFUL = 1
    REFUSED = 2
    UNREACHABLE = 3
    TIMEOUT = 4
    CLASSICAL_FALLBACK = 5
    INTERRUPTED = 130


#: The exit code table as the help text shows it.
EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 the job failed or was cancelled; 2 bad input or refused by the API; "
    "3 could not reach the API (or the database); 4 timeout; 5 classical fallback with "
    "--require-quantum; 130 interrupted."
)


def stderr() -> Console:
    """The console for progress and messages (stdout is for results)."""
    return Console(stderr=True, highlight=False)


def stdout() -> Console:
    """The console for results; wide when it is not a terminal, so that no job id is cut."""
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = max(console.width, 200)
    return console


def fail(message: str, code: ExitCode) -> NoReturn:
    """Print ``qhybrid: message`` on stderr (one line) and exit with ``code``."""
    stderr().print(f"qhybrid: {escape(message)}", soft_wrap=True)
    raise typer.Exit(int(code))


@contextmanager
def client_errors(url: str, job_id: str | None = None) -> Iterator[None]:
    """Turn the client's exceptions into one line each and the documented exit code."""
    try:
        yield
    except ApiUnreachableError as exc:
        fail(f"{exc} (is `qhybrid serve` running there? set --url or QHYBRID_API_URL)", ExitCode.UNREACHABLE)
    except ApiRequestError as exc:
        if exc.status_code >= 500:
            fail(f"the API at {url} failed: {exc}", ExitCode.UNREACHABLE)
        hint = " (set --api-key or QHYBRID_API_KEY)" if exc.status_code == 401 else ""
        fail(f"refused: {exc}{hint}", ExitCode.REFUSED)
    except JobTimeoutError as exc:
        fail(f"{exc}; it goes on (qhybrid jobs watch {exc.job.job_id})", ExitCode.TIMEOUT)
    except ClassicalFallbackError as exc:
        fail(f"{exc}; --require-quantum makes that an error", ExitCode.CLASSICAL_FALLBACK)
    except (JobFailedError, JobCancelledError) as exc:
        fail(str(exc), ExitCode.JOB_UNSUCCESSFUL)
    except KeyboardInterrupt:
        which = f"job {job_id} goes on (qhybrid jobs watch {job_id})" if job_id else "stopped"
        fail(f"interrupted; {which}", ExitCode.INTERRUPTED)


def write_json(data: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def write_json_line(data: Any) -> None:
    """One JSON object on one line of stdout (a stream of them for ``--json`` watching)."""
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- transitions


def event_line(event: JobEvent, since: datetime, task_id: str | None = None) -> str:
    """``   2.4s  submitted  (task task-c33… (attempt 1))``: the time is from ``since``."""
    at = (event.at - since).total_seconds()
    name = event.status.api_name
    if name.startswith("remote_") and task_id:
        return f"  {at:6.1f}s  {name}  task {task_id}"
    detail = f"  ({event.detail})" if event.detail else ""
    return f"  {at:6.1f}s  {name}{detail}"


def event_json(job_id: str, event: JobEvent) -> dict[str, Any]:
    """An event as one JSON line: the job id, then the event as the API sent it."""
    return {"job_id": job_id, **event.model_dump(mode="json")}


class TransitionPrinter:
    """An ``on_update`` callback printing each transition once, timed from the job's creation.

    It also prints, once each, a transient error the worker started retrying (a retry is not a
    transition, but it is why a job seems stuck), and keeps a progress line up to date.
    """

    def __init__(self, console: Console, *, as_json: bool = False, events: bool = True) -> None:
        self.console = console
        self.as_json = as_json
        self.events = events
        self.progress: Progress | None = None
        self._task: Any = None

    def __call__(self, update: JobUpdate) -> None:
        """Print the update's transitions (and a new retry), refresh the progress line."""
        job = update.job
        task_id = job.remote_task.task_id if job.remote_task else None
        for event in update.events if self.events else ():
            if self.as_json:
                write_json_line(event_json(job.job_id, event))
            else:
                self.console.print(escape(event_line(event, job.created_at, task_id)), soft_wrap=True)
        if update.retrying and self.events and not self.as_json:
            at = (job.updated_at - job.created_at).total_seconds()
            # In parentheses: a retry is not a transition, and must not read like one.
            self.console.print(
                f"  {at:6.1f}s  ([yellow]retrying[/]: {escape(update.retrying)})", soft_wrap=True
            )
        if self.progress is not None and self._task is not None:
            self.progress.update(self._task, description=escape(waiting_for(job)))

    def attach(self, progress: Progress) -> None:
        """Show the job's current state on ``progress`` (a spinner with the elapsed time)."""
        self.progress = progress
        self._task = progress.add_task("waiting for the job", total=None)


def waiting_for(job: JobDocument) -> str:
    """What the job waits on, in a few words, for the progress line."""
    name = job.status.api_name
    task = job.remote_task
    if task is not None and name.startswith("remote_"):
        position = f", position {task.queue_position} in the provider's queue" if task.queue_position else ""
        return f"{name}: task {task.task_id}{position}"
    if job.last_error:
        return f"{name}: retrying after {job.last_error[:80]}"
    return name


def follow(
    client: Client,
    job_id: str,
    *,
    timeout: float,
    console: Console,
    as_json: bool = False,
    events: bool = True,
) -> JobDocument:
    """Follow the job until it ends: every transition printed (``events``), a progress line on a terminal.

    Raises:
        JobTimeoutError: The job had not ended after ``timeout`` seconds.
    """
    printer = TransitionPrinter(console, as_json=as_json, events=events)
    if as_json or not console.is_terminal:
        return client.wait(job_id, timeout=timeout, on_update=printer)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        printer.attach(progress)
        return client.wait(job_id, timeout=timeout, on_update=printer)


# ------------------------------------------------------------------------------ documents


def print_result(console: Console, job: JobDocument) -> None:
    """A human-readable summary of a completed job: the portfolios, then how the QPU took part."""
    result = job.result
    if result is None:
        console.print(f"job {job.job_id}: {job.status.api_name}, no result")
        return
    columns: list[tuple[str, Portfolio]] = [("returned", result)]
    if result.quantum_best is not None:
        columns.append(("best QPU sample", result.quantum_best))
    columns.append((f"classical ({result.classical.method})", result.classical))
    table = Table(title=f"job {job.job_id}: {job.status.api_name}", show_header=True)
    table.add_column("")
    for title, _ in columns:
        table.add_column(title)
    table.add_row("selected", *(", ".join(column.selected) for _, column in columns))
    if result.weights is not None:
        table.add_row(
            "weights",
            *(
                ", ".join(f"{k} {v:.0%}" for k, v in (column.weights or {}).items() if v)
                for _, column in columns
            ),
        )
    table.add_row("expected return", *(f"{column.expected_return:.6g}" for _, column in columns))
    table.add_row("variance", *(f"{column.variance:.6g}" for _, column in columns))
    table.add_row("objective", *(f"{column.objective:.6g}" for _, column in columns))
    console.print(table)
    if result.decomposition is not None and result.fallback is None:
        _print_decomposition(console, result, result.decomposition)
        return
    if result.fallback is not None or result.quantum is None:
        reason = result.fallback.reason if result.fallback is not None else "no QPU run"
        console.print(
            f"[yellow]classical fallback[/]: the QPU did not answer ({escape(reason)}); "
            "--require-quantum makes this an error",
            soft_wrap=True,
        )
        return
    _print_quantum_run(console, result, result.quantum)


#: Which step produced the returned portfolio, in words (``found_by`` of a quantum answer).
_FOUND_BY = {
    "sample": "a circuit sample itself, as measured",
    "repair": "classical repair of a circuit sample to the budget",
    "local_search": "classical local search started from the circuit's samples",
}


def answer_origin(result: JobResult) -> str:
    """One plain sentence: which step produced the returned portfolio."""
    if result.source == "classical_fallback":
        return "answer from: the classical solver (classical_fallback: the QPU did not answer)"
    if result.source == "classical_baseline":
        return (
            f"answer from: the classical solver {result.found_by} (classical_baseline: the samples and "
            "their refinement did no better)"
        )
    step = _FOUND_BY.get(result.found_by, result.found_by)
    return f"answer from: {step} ({result.source}, found by {result.found_by})"


def print_contribution(console: Console, contribution: Contribution) -> None:
    """The circuit's samples beside its start state and the classical samplers, and the verdict."""
    table = Table(title="what the circuit contributed (same shots, true problem)", show_header=True)
    for header in ("sampler", "best objective", "shots on optimum", "mean objective", "feasible"):
        table.add_column(header)
    annealing = contribution.annealing
    rows: list[tuple[str, SamplerReport]] = [
        ("circuit (counts returned)", contribution.circuit),
        ("its start state (p = 0)", contribution.start_state),
        ("conditioned rounding", contribution.rounding),
        (f"swap annealing, {annealing.budget_seconds:.2g} s", annealing),
    ]
    for name, row in rows:
        table.add_row(
            name,
            "–" if row.best_objective is None else f"{row.best_objective:.6g}",
            "n/a" if row.optimum_share is None else f"{row.optimum_share:.1%}",
            "–" if row.mean_objective is None else f"{row.mean_objective:.6g}",
            f"{row.feasible_share:.0%}",
        )
    console.print(table)
    verdict = "[green]circuit helped[/]" if contribution.circuit_helped else "[yellow]circuit did not help[/]"
    console.print(f"{verdict}: {escape(contribution.verdict)}", soft_wrap=True)


def _print_decomposition(console: Console, result: JobResult, block: Decomposition) -> None:
    taken = sum(len(r.improved_parts) for r in block.rounds)
    round_note = "" if block.final_round is None else f" (round {block.final_round})"
    console.print(
        f"{result.source}: decomposed, {block.assets} assets in sub-problems of at most "
        f"{block.subproblem_qubits} qubits; {block.subproblems_sent} sub-problems sent to the QPU in "
        f"{len(block.rounds)} rounds, {taken} of their sampled answers improved the portfolio\n"
        f"classical start {block.start.objective:.6g} ({block.start.method}) -> {block.final_objective:.6g}; "
        f"the answer comes from: {block.final_step}{round_note}",
        soft_wrap=True,
    )


def _print_quantum_run(console: Console, result: JobResult, quantum: QuantumRun) -> None:
    spec, circuit = (quantum.qaoa.spec if quantum.qaoa else None), quantum.circuit
    share = quantum.optimum_share
    console.print(answer_origin(result), soft_wrap=True)
    console.print(
        f"gap to the classical optimum {result.gap:.3%}\n"
        f"QPU: backend {quantum.backend}, task {quantum.task_id}, {quantum.shots} shots; "
        f"QAOA {spec.mixer if spec else '?'} mixer, p={spec.reps if spec else '?'}; "
        f"{circuit.logical_qubits if circuit else '?'} qubits, depth {circuit.depth if circuit else '?'}, "
        f"{circuit.two_qubit_gates if circuit else '?'} two-qubit gates; "
        f"samples on the optimum: {'n/a' if share is None else f'{share:.1%}'}"
    )
    if quantum.privacy is not None:
        console.print(
            f"privacy {quantum.privacy.level}: the QPU saw an obfuscated problem on "
            f"{quantum.privacy.qubits_sent} anonymous qubits, no names or amounts; its key stayed here, "
            "sealed (docs/security.md)"
        )
    if quantum.readout is not None:
        readout = quantum.readout
        detail = f", mean error {readout.mean_error:.2%}" if readout.mean_error is not None else ""
        state = "applied" if readout.applied else "not applied"
        console.print(f"readout-error mitigation {state}: {escape(readout.reason)}{detail}", soft_wrap=True)
    if quantum.contribution is not None:
        print_contribution(console, quantum.contribution)
    link = quantum.link
    if link is not None and link.tls_version:
        console.print(
            f"link to the QPU: {link.tls_version}, key exchange {link.tls_group}"
            f"{' (hybrid post-quantum)' if link.post_quantum else ''}; every request is in the "
            "egress audit log (qhybrid audit verify)"
        )


def print_job(console: Console, job: JobDocument) -> None:
    """A job document for a human: what, where, every transition, and the outcome."""
    task = job.remote_task
    lines = [
        f"job {job.job_id}: {job.status.api_name}",
        f"  backend {job.backend}, {job.shots} shots, attempt {job.attempt}"
        + (f", task {task.task_id} ({task.state})" if task and task.task_id else ""),
        f"  created {job.created_at.isoformat(timespec='seconds')}"
        + (f", finished {job.finished_at.isoformat(timespec='seconds')}" if job.finished_at else ""),
    ]
    if job.cost is not None and (job.cost.estimated is not None or job.cost.actual is not None):
        lines.append(f"  cost {job.cost.currency}: estimated {job.cost.estimated}, actual {job.cost.actual}")
    if job.error:
        lines.append(f"  error: {job.error}")
    if job.last_error and not job.finished:
        lines.append(f"  retrying: {job.last_error}")
    for line in lines:
        console.print(escape(line), soft_wrap=True)
    task_id = task.task_id if task else None
    for event in job.events:
        console.print(escape(event_line(event, job.created_at, task_id)), soft_wrap=True)
    if job.result is not None:
        print_result(console, job)


def print_page(console: Console, page: JobPage) -> None:
    """A page of jobs as a table, and how to get the next one."""
    table = Table(show_header=True, box=None)
    table.add_column("job", no_wrap=True)  # ids are copied from here: never cut one
    for column in ("status", "backend", "created", "finished", "objective"):
        table.add_column(column)
    for item in page.items:
        table.add_row(
            item.job_id,
            item.status.api_name,
            item.backend,
            f"{item.created_at:%Y-%m-%d %H:%M:%S}",
            f"{item.finished_at:%Y-%m-%d %H:%M:%S}" if item.finished_at else "",
            "" if item.objective is None else f"{item.objective:.6g}",
        )
    console.print(table)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}", soft_wrap=True)
