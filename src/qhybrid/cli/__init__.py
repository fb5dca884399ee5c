"""The ``qhybrid`` command: serve, worker, cloud, demo, sample, submit, jobs, keys, kek, audit, reconcile.

The server commands are here; the client commands (``submit``, ``jobs ...``) are in
:mod:`qhybrid.cli.jobs`, what they print and their exit codes in :mod:`qhybrid.cli.output`.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from qhybrid import __version__
from qhybrid.cli.jobs import jobs_app
from qhybrid.cli.jobs import submit as submit_command
from qhybrid.cli.kek import kek_app
from qhybrid.cli.keys import keys_app
from qhybrid.cli.output import EXIT_CODES_HELP, ExitCode, fail, print_result, stderr, stdout
from qhybrid.cli.settings import checked_database, checked_settings
from qhybrid.core.config import unknown_variables
from qhybrid.core.files import UMASK
from qhybrid.core.logging import configure_logging, logging_config

app = typer.Typer(
    help="Hybrid classical/quantum portfolio optimization that keeps business data in the trusted zone.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    # Help text is written in Markdown (`code`), never shown with its markup.
    rich_markup_mode="markdown",
    # A bug gets a plain traceback; expected failures get one line and an exit code. Rich's
    # tracebacks with locals ran to 243 lines and would print secrets held in local variables.
    pretty_exceptions_enable=False,
)
app.add_typer(jobs_app, name="jobs")
app.add_typer(keys_app, name="keys")
app.add_typer(kek_app, name="kek")
app.command("submit")(submit_command)

#: Commands that configure logging: they log the unknown-variable warnings in the log format.
_LOGGING_COMMANDS = frozenset({"serve", "worker", "demo"})


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qhybrid {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Run before every command: private files, and a warning about misspelled `QHYBRID_*` variables."""
    # Everything a command creates (databases, logs, audit, keys, a library's files) is private.
    os.umask(UMASK)
    if ctx.invoked_subcommand not in _LOGGING_COMMANDS:
        for warning in unknown_variables():
            stderr().print(f"qhybrid: warning: {warning}", markup=False, soft_wrap=True)


def _start_logging(level: str | None) -> None:
    """Configure this process's logging, then log what is wrong with its environment."""
    try:
        configure_logging(level)
    except ValueError as exc:  # QHYBRID_LOG_FORMAT=yaml
        fail(str(exc), ExitCode.REFUSED)
    log = logging.getLogger("qhybrid.config")
    for warning in unknown_variables():
        log.warning("%s", warning)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    log_level: Annotated[str, typer.Option(envvar="QHYBRID_LOG_LEVEL", help="Log level.")] = "info",
) -> None:
    """Run the HTTP API (uvicorn); it migrates the database on start."""
    import uvicorn

    from qhybrid.api.server import uvicorn_options

    _start_logging(log_level)
    settings = checked_settings()
    checked_database(settings)
    # An import string plus factory=True lets uvicorn start several processes, each building its
    # own application (and connection pools) from the environment; each configures its logging
    # from the same dictionary, so every process writes one format.
    uvicorn.run(
        "qhybrid.api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level.lower(),
        log_config=logging_config(log_level),
        # Header and body deadlines, idle keep-alive, a connection cap: see qhybrid.api.server.
        **uvicorn_options(settings),
    )


@app.command()
def worker(
    threads: Annotated[
        int | None, typer.Option(help="Jobs processed at once (default QHYBRID_WORKER_THREADS).")
    ] = None,
    log_level: Annotated[str, typer.Option(envvar="QHYBRID_LOG_LEVEL", help="Log level.")] = "info",
) -> None:
    """Run a worker: the queue consumer and the reconciler (SIGTERM lets running steps finish)."""
    from qhybrid.gateway.tokens import ForeignTokenError
    from qhybrid.jobs.worker import Worker
    from qhybrid.proxy.keys import KekMissingError

    _start_logging(log_level)
    settings = checked_settings()
    checked_database(settings)
    try:
        started = Worker(settings)
    except (KekMissingError, ForeignTokenError) as exc:
        # No job is lost: nothing was created or changed; restoring the key lets the worker start.
        fail(str(exc), ExitCode.REFUSED)
    started.run(threads=threads)
    # The process is about to end: collecting its heap (numpy, qiskit, scipy...) at interpreter
    # exit took about a second, after the worker had already stopped. Frozen objects are skipped.
    gc.freeze()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def cloud(ctx: typer.Context) -> None:
    """Run the emulated public quantum cloud (all options: `qhybrid cloud --help-cloud`)."""
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

    path = file or checked_settings().audit_path
    extra = [] if anchor is None else ["--anchor", anchor]
    raise typer.Exit(audit.main(["verify", "--file", str(path), *extra]))


@app.command()
def reconcile() -> None:
    """Re-kick overdue jobs once (the worker does this periodically on its own)."""
    from qhybrid.jobs.database import Database
    from qhybrid.jobs.queue import make_queue
    from qhybrid.jobs.reconciler import reconcile_once
    from qhybrid.jobs.store import JobStore

    settings = checked_settings()
    checked_database(settings)
    db = Database(settings.resolved_database_url)
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
    """Start the cloud, the API and a worker, submit a sample portfolio over HTTP, print the result.

    Each run has its own folders under `.qhybrid-demo/` (kept for their logs; the last few runs).
    """
    from qhybrid.cli.output import TransitionPrinter
    from qhybrid.demo import run_demo, sample_request

    _start_logging("WARNING")
    request = json.loads(file.read_text()) if file else None
    if backend is not None:
        request = request or sample_request()
        request["backend"] = backend
    try:
        job = run_demo(
            request=request,
            queue_delay=queue_delay,
            run_delay=run_delay,
            on_update=TransitionPrinter(stderr()),
        )
    except RuntimeError as exc:
        Console(stderr=True).print(f"[red]demo failed[/]: {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        sys.stdout.write(json.dumps(job.raw, indent=2) + "\n")
    else:
        print_result(stdout(), job)


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
    """Print a request on real S&P 500 prices, ready for `qhybrid submit` or curl."""
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


def main() -> None:
    """Entry point for ``python -m qhybrid``."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
