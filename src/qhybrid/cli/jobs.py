"""The client commands: ``qhybrid submit`` and ``qhybrid jobs list|show|cancel|result|watch``.

Each talks to a running API (``--url``, default ``QHYBRID_API_URL``; ``--api-key``, default
``QHYBRID_API_KEY``), prints for a human or, with ``--json``, JSON on stdout only, and ends with
an exit code from :class:`~qhybrid.cli.output.ExitCode`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from qhybrid.cli.output import (
    EXIT_CODES_HELP,
    ExitCode,
    client_errors,
    fail,
    follow,
    print_job,
    print_page,
    print_result,
    stderr,
    stdout,
    write_json,
)
from qhybrid.client import DEFAULT_URL, Client, JobDocument, result_of
from qhybrid.domain.states import STATUS_NAMES

Url = Annotated[str, typer.Option(envvar="QHYBRID_API_URL", help="API base URL.")]
ApiKey = Annotated[str | None, typer.Option(envvar="QHYBRID_API_KEY", help="API key, if the API needs one.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout only.")]
JobId = Annotated[str, typer.Argument(help="The job id (from `qhybrid submit` or `qhybrid jobs list`).")]
Timeout = Annotated[float, typer.Option(min=0, help="Seconds to wait for the job to end.")]
RequireQuantum = Annotated[
    bool,
    typer.Option(
        "--require-quantum",
        help="Exit 5 if the job completed with a classical fallback (the QPU did not answer).",
    ),
]

jobs_app = typer.Typer(
    help="Jobs on a running API: list, show, cancel, result, watch.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
)


def _client(url: str, api_key: str | None) -> Client:
    # An empty key (QHYBRID_API_KEY= in a script) means none, not "read the environment again".
    return Client(url, api_key=api_key or "")


def _end(job: JobDocument, *, require_quantum: bool) -> None:
    """Exit with the code the job's outcome calls for (0 for a result that was asked for)."""
    with client_errors(""):
        result_of(job, require_quantum=require_quantum)


def submit(
    file: Annotated[
        Path, typer.Argument(help="Request JSON file (`qhybrid sample` writes one).", exists=True)
    ],
    url: Url = DEFAULT_URL,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the job, printing every transition, until it ends.")
    ] = False,
    as_json: AsJson = False,
    timeout: Timeout = 3600.0,
    require_quantum: RequireQuantum = False,
    idempotency_key: Annotated[str | None, typer.Option(help="Idempotency-Key header.")] = None,
    api_key: ApiKey = None,
) -> None:
    """Submit a request file to a running API; with --wait, follow it and print the result."""
    err = stderr()
    try:
        request: dict[str, Any] = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        fail(f"{file}: not a readable JSON file: {exc}", ExitCode.REFUSED)
    with _client(url, api_key) as client:
        with client_errors(url):
            job = client.submit(request, idempotency_key=idempotency_key)
        cost = "" if job.estimated_cost is None else f", estimated cost ${job.estimated_cost:g}"
        if not wait:
            if as_json:
                write_json(job.accepted.model_dump(mode="json") if job.accepted else {"job_id": job.id})
            else:
                err.print(f"job accepted{cost}")
                typer.echo(job.id)
            return
        err.print(f"job {job.id} accepted{cost}")
        with client_errors(url, job.id):
            document = follow(client, job.id, timeout=timeout, console=err)
    _show_outcome(document, as_json=as_json)
    _end(document, require_quantum=require_quantum)


def _show_outcome(job: JobDocument, *, as_json: bool) -> None:
    if as_json:
        write_json(job.raw)
    elif job.result is not None:
        print_result(stdout(), job)


@jobs_app.command("list")
def list_jobs(
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    status: Annotated[
        str | None, typer.Option(help=f"Only jobs in this status: {', '.join(STATUS_NAMES)}.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Jobs per page.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="The next page: the cursor the last printed.")] = None,
    as_json: AsJson = False,
) -> None:
    """List jobs, newest first."""
    with _client(url, api_key) as client, client_errors(url):
        page = client.list(limit=limit, cursor=cursor, status=status)
    if as_json:
        write_json(page.model_dump(mode="json"))
    else:
        print_page(stdout(), page)


@jobs_app.command("show")
def show(job_id: JobId, url: Url = DEFAULT_URL, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Show a job: status, provider task, every transition, error or result."""
    with _client(url, api_key) as client, client_errors(url):
        job = client.get(job_id)
    if as_json:
        write_json(job.raw)
    else:
        print_job(stdout(), job)


@jobs_app.command("cancel")
def cancel(job_id: JobId, url: Url = DEFAULT_URL, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Cancel a job and its provider task (exit 2 if it already ended)."""
    with _client(url, api_key) as client, client_errors(url):
        job = client.cancel(job_id)
    if as_json:
        write_json(job.raw)
    elif job.finished:
        stderr().print(f"job {job.job_id} cancelled")
    else:
        stderr().print(
            f"job {job.job_id} is {job.status.api_name}; a worker cancels it and its provider task "
            f"(qhybrid jobs watch {job.job_id})"
        )


@jobs_app.command("result")
def result(
    job_id: JobId,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    timeout: Timeout = 3600.0,
    require_quantum: RequireQuantum = False,
    as_json: AsJson = False,
) -> None:
    """Wait for a job to end and print its result (exit 1 if it failed or was cancelled)."""
    with _client(url, api_key) as client, client_errors(url, job_id):
        job = follow(client, job_id, timeout=timeout, console=stderr(), events=False)
    if job.result is not None:
        if as_json:
            write_json(job.raw["result"])
        else:
            print_result(stdout(), job)
    _end(job, require_quantum=require_quantum)


@jobs_app.command("watch")
def watch(
    job_id: JobId,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    timeout: Timeout = 3600.0,
    require_quantum: RequireQuantum = False,
    as_json: AsJson = False,
) -> None:
    """Print every transition of a job, from the first, until it ends (--json: one event per line)."""
    out = Console(highlight=False)
    with _client(url, api_key) as client, client_errors(url, job_id):
        job = follow(client, job_id, timeout=timeout, console=out, as_json=as_json)
    if not as_json:
        ending = job.status.api_name
        if job.classical_fallback:
            ending += f" with a classical fallback ({job.fallback_reason})"
        elif job.result is not None:
            ending += f": objective {job.result.objective:.6g} ({job.result.source})"
        elif job.error:
            ending += f": {job.error}"
        out.print(f"job {job.job_id} {ending}", soft_wrap=True, markup=False)
    _end(job, require_quantum=require_quantum)
