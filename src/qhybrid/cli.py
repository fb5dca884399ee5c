"""The ``qhybrid`` command: serve, worker, cloud, demo, submit, reconcile."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from qhybrid.core.config import Settings
from qhybrid.core.logging import configure_logging

app = typer.Typer(
    help="Hybrid classical/quantum portfolio optimization that keeps business data in the trusted zone.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Run the HTTP API (uvicorn); it migrates the database on start."""
    import uvicorn

    configure_logging(log_level)
    # An import string plus factory=True lets uvicorn start several processes, each building its
    # own application (and connection pools) from the environment.
    uvicorn.run(
        "qhybrid.api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level.lower(),
    )


@app.command()
def worker(
    threads: Annotated[
        int | None, typer.Option(help="Jobs processed at once (default QHYBRID_WORKER_THREADS).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Run a worker: the queue consumer and the reconciler."""
    from qhybrid.jobs.worker import Worker

    configure_logging(log_level)
    Worker(Settings()).run(threads=threads)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def cloud(ctx: typer.Context) -> None:
    """Run the emulated public quantum cloud (all options: ``qhybrid cloud --help-cloud``)."""
    from qhybrid.cloud.main import main as cloud_main

    args = ["--help" if arg == "--help-cloud" else arg for arg in ctx.args]
    raise typer.Exit(cloud_main(args) or 0)


audit_app = typer.Typer(help="The egress audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    file: Annotated[
        Path | None, typer.Option(help="Audit log to check (default <data_dir>/audit/egress.log).")
    ] = None,
    anchor: Annotated[
        str | None,
        typer.Option(help="A last hash from an earlier check, kept elsewhere: it must still be there."),
    ] = None,
) -> None:
    """Check the hash chain: exit 0 if every entry is intact and in order, 1 naming the first problem."""
    from qhybrid.gateway import audit

    path = file or Settings().audit_path
    extra = [] if anchor is None else ["--anchor", anchor]
    raise typer.Exit(audit.main(["verify", "--file", str(path), *extra]))


@app.command()
def reconcile() -> None:
    """Re-kick overdue jobs once (the worker does this periodically on its own)."""
    from qhybrid.jobs.database import Database
    from qhybrid.jobs.queue import make_queue
    from qhybrid.jobs.reconciler import reconcile_once
    from qhybrid.jobs.store import JobStore

    settings = Settings()
    db = Database(settings.resolved_database_url)
    db.migrate()
    kicked = reconcile_once(
        JobStore(db), make_queue(settings), grace_seconds=settings.reconcile_grace_seconds
    )
    typer.echo(f"re-kicked {len(kicked)} job(s)")


@app.command()
def demo(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final job document as JSON on stdout only.")
    ] = False,
    queue_delay: Annotated[float, typer.Option(help="Seconds the emulated QPU keeps a task QUEUED.")] = 2.0,
    run_delay: Annotated[float, typer.Option(help="Seconds the emulated QPU keeps a task RUNNING.")] = 1.5,
    file: Annotated[
        Path | None, typer.Option(help="A request JSON file instead of the sample portfolio.")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="local (emulated cloud, default), braket-local, braket-local:dm, ibm-local:FakeTorino..."
        ),
    ] = None,
) -> None:
    """Start the cloud, the API and a worker, submit a sample portfolio over HTTP, print the result."""
    from qhybrid.demo import run_demo, sample_request

    configure_logging("WARNING")
    request = json.loads(file.read_text()) if file else None
    if backend is not None:
        request = request or sample_request()
        request["backend"] = backend
    try:
        run_demo(Settings(), as_json=as_json, request=request, queue_delay=queue_delay, run_delay=run_delay)
    except RuntimeError as exc:
        Console(stderr=True).print(f"[red]demo failed[/]: {exc}")
        raise typer.Exit(1) from exc


@app.command()
def sample(
    tickers: Annotated[
        str, typer.Option(help="Comma-separated tickers from the S&P 500 dataset shipped with skfolio.")
    ] = ",".join(("AAPL", "MSFT", "JPM", "BAC", "XOM", "CVX", "JNJ", "PG", "KO", "WMT")),
    budget: Annotated[
        int | None, typer.Option(help="Assets to hold (selection) or total lots (weights).")
    ] = None,
    days: Annotated[int, typer.Option(help="Trading days of history, ending 2022-12-28.")] = 756,
    weights: Annotated[
        bool, typer.Option("--weights", help="Ask for integer lots instead of a selection.")
    ] = False,
    max_lots: Annotated[int, typer.Option(help="Upper bound of lots per asset (with --weights).")] = 3,
) -> None:
    """Print a request on real S&P 500 prices, ready for ``qhybrid submit`` or curl."""
    from qhybrid.demo import sample_request
    from qhybrid.portfolio.data import load_sp500

    chosen = tuple(t.strip().upper() for t in tickers.split(",") if t.strip())
    known = load_sp500()[0]
    unknown = [t for t in chosen if t not in known]
    if unknown:
        Console(stderr=True).print(
            f"[red]unknown tickers[/]: {', '.join(unknown)}; known: {', '.join(known)}"
        )
        raise typer.Exit(2)
    request = sample_request(tickers=chosen, budget=budget, days=days)
    if weights:
        request.update(formulation="weights", max_lots=max_lots, budget=budget or len(chosen))
    sys.stdout.write(json.dumps(request) + "\n")


@app.command()
def submit(
    file: Annotated[
        Path, typer.Argument(help="Request JSON file (see docs or the sample portfolio).", exists=True)
    ],
    url: Annotated[
        str, typer.Option(envvar="QHYBRID_API_URL", help="API base URL.")
    ] = "http://127.0.0.1:8000",
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it ends.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout only.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 3600.0,
    idempotency_key: Annotated[str | None, typer.Option(help="Idempotency-Key header.")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="QHYBRID_API_KEY", help="API key, if the API needs one.")
    ] = None,
) -> None:
    """Submit a request file to a running API; optionally wait for the result."""
    from qhybrid.client import ApiRequestError, Client
    from qhybrid.demo import print_result

    err = Console(stderr=True)
    try:
        request: dict[str, Any] = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        err.print(f"[red]{file}: not valid JSON[/]: {exc}")
        raise typer.Exit(2) from exc
    started = time.monotonic()
    with Client(url, api_key=api_key) as client:
        try:
            job_id = client.submit(request, idempotency_key=idempotency_key)
        except ApiRequestError as exc:
            err.print(f"[red]refused[/]: {exc}")
            raise typer.Exit(2) from exc
        if not wait:
            if as_json:
                sys.stdout.write(json.dumps({"job_id": job_id}) + "\n")
            else:
                typer.echo(job_id)
            return
        err.print(f"job {job_id} accepted")
        job = client.wait(
            job_id,
            timeout=timeout,
            on_update=lambda j: err.print(f"  {time.monotonic() - started:6.1f}s  {j['status']}"),
        )
    if as_json:
        sys.stdout.write(json.dumps(job, indent=2) + "\n")
    elif job["status"] == "completed":
        print_result(Console(), job)
    else:
        err.print(f"job ended {job['status']}: {job.get('error')}")
    if job["status"] != "completed":
        raise typer.Exit(1)


def main() -> None:
    """Entry point for ``python -m qhybrid``."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
