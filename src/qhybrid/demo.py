"""``qhybrid demo``: the whole flow on the embedded default, over real HTTP.

It starts what the embedded default needs, submits a sample portfolio, follows the job through
its states and prints the result.

Three child processes, exactly as in a deployment: the emulated public cloud (its own folder,
``./.qhybrid-cloud/``), the API (uvicorn) and a worker. They share nothing but the network and,
for the API and the worker, the embedded database and queue under ``./.qhybrid/``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from qhybrid.client import Client
from qhybrid.core.config import Settings
from qhybrid.domain.result import JobResult, Portfolio, QuantumRun
from qhybrid.portfolio.data import balanced_risk_aversion, estimate, load_sp500

#: The demo's stocks: large caps from four sectors, all in skfolio's S&P 500 dataset.
SAMPLE_TICKERS = ("AAPL", "MSFT", "JPM", "BAC", "XOM", "CVX", "JNJ", "PG", "KO", "WMT")

#: The emulated cloud's folder (relative to the working directory) and the certificate it writes.
_CLOUD_DIR = Path(".qhybrid-cloud")
_CLOUD_CA = _CLOUD_DIR / "tls" / "cert.pem"


def sample_request(
    *, tickers: tuple[str, ...] = SAMPLE_TICKERS, budget: int | None = None, days: int = 756
) -> dict[str, Any]:
    """A request on real data: the last ``days`` daily closes of ``tickers`` (up to 2022-12-28).

    The request carries the prices, so the trusted zone estimates μ and Σ (Ledoit-Wolf) itself.
    The risk aversion is the one where the return-chaser and the variance-minimiser tie, so the
    answer is neither (see :func:`qhybrid.portfolio.data.balanced_risk_aversion`).
    """
    names, prices, dates = load_sp500()
    columns = [names.index(ticker) for ticker in tickers]
    window = prices[-days:, columns]
    budget = budget or len(tickers) // 2
    fit = estimate(window)
    risk = balanced_risk_aversion(fit.expected_returns, fit.covariance, budget)
    return {
        "prices": {
            "assets": list(tickers),
            "values": [[round(float(v), 4) for v in row] for row in window],
            "dates": list(dates[-days:]),
        },
        "estimator": "ledoit_wolf",
        "risk_aversion": float(f"{risk:.4g}"),
        "budget": budget,
        "backend": "emulated-cloud",
        "shots": 4096,
        "options": {"seed": 7},
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class _Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def _child(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Iterator[_Child]:
    log_path = log_dir / f"demo-{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    child = _Child(name, popen, log_path)
    try:
        yield child
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGINT)
            try:
                popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout=10)


def _wait_ready(child: _Child, url: str, *, ca_file: Path | None = None, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.popen.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.popen.returncode}:\n{child.tail()}")
        # The cloud writes its self-signed certificate at start; wait for it, then pin it.
        if ca_file is None or ca_file.exists():
            verify: ssl.SSLContext | bool = (
                True if ca_file is None else ssl.create_default_context(cafile=ca_file)
            )
            try:
                if httpx.get(url, timeout=2.0, trust_env=False, verify=verify).status_code == 200:
                    return
            except (httpx.HTTPError, ssl.SSLError):
                pass
        time.sleep(0.2)
    raise RuntimeError(f"{child.name} not ready at {url} after {timeout:.0f}s:\n{child.tail()}")


def run_demo(
    settings: Settings,
    *,
    as_json: bool = False,
    request: dict[str, Any] | None = None,
    queue_delay: float = 2.0,
    run_delay: float = 1.5,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Run the whole flow once and return the final job document.

    Progress goes to stderr; stdout gets the result (a table, or the job document as JSON).

    Raises:
        RuntimeError: If a process does not start or the job does not complete.
    """
    err = Console(stderr=True)
    settings.ensure_dirs()
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    cloud_port, api_port = _free_port(), _free_port()
    env = _child_env(settings, cloud_port)
    request = request or sample_request()
    with ExitStack() as stack:
        with err.status("starting the emulated cloud, the API and a worker..."):
            worker = _start_processes(
                stack,
                env,
                log_dir,
                cloud_port=cloud_port,
                api_port=api_port,
                queue_delay=queue_delay,
                run_delay=run_delay,
            )
        err.print(
            f"[green]ready[/]: cloud :{cloud_port}, api :{api_port}, worker pid {worker.popen.pid} "
            f"(logs in {log_dir})"
        )
        job_id, job = _submit_and_follow(f"http://127.0.0.1:{api_port}", request, err, timeout=timeout)
        if job["status"] != "completed":
            raise RuntimeError(
                f"job {job_id} ended {job['status']}: {job.get('error')}\nworker log:\n{worker.tail()}"
            )
    if as_json:
        sys.stdout.write(json.dumps(job, indent=2) + "\n")
    else:
        print_result(Console(highlight=False, soft_wrap=True), job)
    return job


def _child_env(settings: Settings, cloud_port: int) -> dict[str, str]:
    """The environment of the three processes: this one's, pointed at the demo's cloud and data."""
    # One fresh token for both sides: the cloud expects it, the worker presents it.
    token = secrets.token_urlsafe(24)
    env = dict(os.environ)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "QHYBRID_DATA_DIR": str(settings.data_dir),
            "QHYBRID_CLOUD_URL": f"https://127.0.0.1:{cloud_port}",
            "QHYBRID_CLOUD_CA_FILE": str(_CLOUD_CA.resolve()),
            "QHYBRID_CLOUD_TOKEN": token,
            # Poll often: the demo's point is to show every state the provider reports.
            "QHYBRID_POLL_INITIAL_SECONDS": "0.25",
            "QHYBRID_POLL_MAX_SECONDS": "0.5",
            "QCLOUD_TOKEN": token,
        }
    )
    return env


def _start_processes(
    stack: ExitStack,
    env: dict[str, str],
    log_dir: Path,
    *,
    cloud_port: int,
    api_port: int,
    queue_delay: float,
    run_delay: float,
) -> _Child:
    """Start the cloud, the API and a worker (stopped when ``stack`` closes); return the worker.

    Returns once the cloud and the API answer their health checks.
    """
    cloud_args = [
        "-m",
        "qhybrid.cloud",
        "--port",
        str(cloud_port),
        "--data-dir",
        str(_CLOUD_DIR),
        "--queue-delay",
        str(queue_delay),
        "--run-delay",
        str(run_delay),
    ]
    cloud = stack.enter_context(_child("cloud", cloud_args, env, log_dir))
    api = stack.enter_context(
        _child("api", ["-m", "qhybrid", "serve", "--port", str(api_port)], env, log_dir)
    )
    worker = stack.enter_context(_child("worker", ["-m", "qhybrid", "worker"], env, log_dir))
    _wait_ready(cloud, f"https://127.0.0.1:{cloud_port}/healthz", ca_file=_CLOUD_CA)
    _wait_ready(api, f"http://127.0.0.1:{api_port}/readyz")
    return worker


def _submit_and_follow(
    api_url: str, request: dict[str, Any], err: Console, *, timeout: float
) -> tuple[str, dict[str, Any]]:
    """Submit ``request`` to the API, print each transition on ``err``; return the job id and final job."""
    with Client(api_url) as client:
        job_id = client.submit(request, idempotency_key=f"demo-{secrets.token_hex(8)}")
        err.print(f"submitted job [bold]{job_id}[/] (202 Accepted)")
        created = datetime.fromisoformat(client.get(job_id)["created_at"])
        with err.status("waiting for the job..."):
            job = client.wait(job_id, timeout=timeout, on_update=_EventPrinter(err, created))
    return job_id, job


class _EventPrinter:
    """An ``on_update`` callback that prints a job's events, each once, timed from its creation.

    Every transition recorded since the last look is printed, not only the current status: quick
    states (preparing, finalizing) pass between two polls.
    """

    def __init__(self, console: Console, created: datetime) -> None:
        self._console = console
        self._created = created
        self._printed = 0

    def __call__(self, job: dict[str, Any]) -> None:
        task = (job.get("remote_task") or {}).get("task_id")
        for event in job["events"][self._printed :]:
            extra = f"  task {task}" if event["status"].startswith("remote_") and task else ""
            detail = f"  ({event['detail']})" if event.get("detail") and not extra else ""
            at = (datetime.fromisoformat(event["at"]) - self._created).total_seconds()
            self._console.print(f"  {at:6.1f}s  {event['status']}{extra}{detail}")
        self._printed = len(job["events"])


def print_result(console: Console, job: dict[str, Any]) -> None:
    """A human-readable summary of a completed job (the API's job document)."""
    result = JobResult.model_validate(job["result"])
    columns: list[tuple[str, Portfolio]] = [("returned", result)]
    if result.quantum_best is not None:
        columns.append(("best QPU sample", result.quantum_best))
    columns.append((f"classical ({result.classical.method})", result.classical))
    table = Table(title=f"job {job['job_id']}: {job['status']}", show_header=True)
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
    if result.fallback is not None or result.quantum is None:
        reason = result.fallback.reason if result.fallback is not None else "no QPU run"
        console.print(f"[yellow]classical fallback[/]: {reason}")
        return
    _print_quantum_run(console, result, result.quantum)


def _print_quantum_run(console: Console, result: JobResult, quantum: QuantumRun) -> None:
    spec, circuit = (quantum.qaoa.spec if quantum.qaoa else None), quantum.circuit
    share = quantum.optimum_share
    console.print(
        f"{result.source}, found by {result.found_by}; gap to the classical optimum {result.gap:.3%}\n"
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
    link = quantum.link
    if link is not None and link.tls_version:
        console.print(
            f"link to the QPU: {link.tls_version}, key exchange {link.tls_group}"
            f"{' (hybrid post-quantum)' if link.post_quantum else ''}; every request is in the "
            "egress audit log (qhybrid audit verify)"
        )
