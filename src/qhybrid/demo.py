"""``qhybrid demo``: the whole flow on the embedded default, over real HTTP.

It starts what the embedded default needs, submits a sample portfolio, follows the job through
its states and returns the final job document (the command line prints it).

Three child processes, exactly as in a deployment: the emulated public cloud, the API (uvicorn)
and a worker. They share nothing but the network and, for the API and the worker, the embedded
database and queue. Each run gets folders of its own under ``./.qhybrid-demo/`` (``data/`` for
the API and the worker, ``cloud/`` for the cloud): a demo never touches a deployment's
``./.qhybrid/`` or ``./.qhybrid-cloud/``, and two demos started in one folder do not meet.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from qhybrid.client import Client, JobDocument, JobUpdate
from qhybrid.portfolio.data import balanced_risk_aversion, estimate, load_sp500

#: The demo's stocks: large caps from four sectors, all in skfolio's S&P 500 dataset.
SAMPLE_TICKERS = ("AAPL", "MSFT", "JPM", "BAC", "XOM", "CVX", "JNJ", "PG", "KO", "WMT")

#: Where the demo's runs keep their folders, relative to the working directory.
DEMO_FOLDER = Path(".qhybrid-demo")
#: Finished runs kept for their logs; older ones are deleted when a new run starts.
KEEP_RUNS = 5

#: Variables that would point the demo at a deployment's database or queue: never passed on.
_DEPLOYMENT_VARIABLES = (
    "QHYBRID_DATABASE_URL",
    "QHYBRID_REDIS_URL",
    "QHYBRID_QUEUE_NAME",
    "QHYBRID_API_KEYS",
)


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


@dataclass(frozen=True)
class DemoRun:
    """The folders of one demo run."""

    root: Path

    @property
    def data_dir(self) -> Path:
        """The API's and the worker's data dir (database, queue, keys, audit log, logs)."""
        return self.root / "data"

    @property
    def cloud_dir(self) -> Path:
        """The emulated cloud's data dir."""
        return self.root / "cloud"

    @property
    def log_dir(self) -> Path:
        """Where the three processes write their logs."""
        return self.data_dir / "logs"

    @property
    def cloud_ca(self) -> Path:
        """The certificate the cloud writes at start, pinned by the worker."""
        return self.cloud_dir / "tls" / "cert.pem"


def new_run(folder: Path = DEMO_FOLDER) -> DemoRun:
    """Fresh folders for one run under ``folder``, after deleting finished runs beyond the last few."""
    folder.mkdir(parents=True, exist_ok=True)
    _prune(folder, keep=KEEP_RUNS - 1)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    root = folder / f"{stamp}-{os.getpid()}"
    root.mkdir()
    run = DemoRun(root)
    run.log_dir.mkdir(parents=True)
    return run


def _prune(folder: Path, *, keep: int) -> None:
    runs = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[: max(0, len(runs) - keep)]:
        if not _in_use(DemoRun(old)):
            shutil.rmtree(old, ignore_errors=True)


def _in_use(run: DemoRun) -> bool:
    """Whether a live cloud still holds the run's folder (another demo, still running)."""
    lock = run.cloud_dir / "cloud.lock"
    if not lock.exists():
        return False
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def run_demo(
    *,
    request: dict[str, Any] | None = None,
    queue_delay: float = 2.0,
    run_delay: float = 1.5,
    timeout: float = 600.0,
    on_update: Callable[[JobUpdate], None] | None = None,
    folder: Path = DEMO_FOLDER,
) -> JobDocument:
    """Run the whole flow once and return the final job document.

    Progress (start-up, the job's id) goes to stderr; ``on_update`` is called with every update
    of the job (its transitions, in order).

    Raises:
        RuntimeError: If a process does not start or the job does not complete.
    """
    err = Console(stderr=True)
    run = new_run(folder)
    cloud_port, api_port = _free_port(), _free_port()
    env = _child_env(run, cloud_port)
    request = request or sample_request()
    with ExitStack() as stack:
        with err.status("starting the emulated cloud, the API and a worker..."):
            worker = _start_processes(
                stack, env, run, cloud_port=cloud_port, api_port=api_port, queue_delay=queue_delay,
                run_delay=run_delay,
            )  # fmt: skip
        err.print(
            f"[green]ready[/]: cloud :{cloud_port}, api :{api_port}, worker pid {worker.popen.pid} "
            f"(folders and logs in {run.root})",
            soft_wrap=True,
        )
        job = _submit_and_follow(
            f"http://127.0.0.1:{api_port}", request, err, timeout=timeout, on_update=on_update
        )
        if job.status.api_name != "completed":
            raise RuntimeError(
                f"job {job.job_id} ended {job.status.api_name}: {job.error}\nworker log:\n{worker.tail()}"
            )
    return job


def _child_env(run: DemoRun, cloud_port: int) -> dict[str, str]:
    """The environment of the three processes: this one's, pointed at the run's cloud and folders."""
    # One fresh token for both sides: the cloud expects it, the worker presents it.
    token = secrets.token_urlsafe(24)
    env = {name: value for name, value in os.environ.items() if name not in _DEPLOYMENT_VARIABLES}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "QHYBRID_DATA_DIR": str(run.data_dir.resolve()),
            "QHYBRID_CLOUD_URL": f"https://127.0.0.1:{cloud_port}",
            "QHYBRID_CLOUD_CA_FILE": str(run.cloud_ca.resolve()),
            "QHYBRID_CLOUD_TOKEN": token,
            # Poll often: the demo's point is to show every state the provider reports.
            "QHYBRID_POLL_INITIAL_SECONDS": "0.25",
            "QHYBRID_POLL_MAX_SECONDS": "0.5",
            "QCLOUD_TOKEN": token,
            # One log format for the three processes.
            "QCLOUD_LOG_FORMAT": os.environ.get("QHYBRID_LOG_FORMAT", "text").strip().lower(),
        }
    )
    return env


def _start_processes(
    stack: ExitStack,
    env: dict[str, str],
    run: DemoRun,
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
        str(run.cloud_dir),
        "--queue-delay",
        str(queue_delay),
        "--run-delay",
        str(run_delay),
    ]
    cloud = stack.enter_context(_child("cloud", cloud_args, env, run.log_dir))
    api = stack.enter_context(
        _child("api", ["-m", "qhybrid", "serve", "--port", str(api_port)], env, run.log_dir)
    )
    worker = stack.enter_context(_child("worker", ["-m", "qhybrid", "worker"], env, run.log_dir))
    _wait_ready(cloud, f"https://127.0.0.1:{cloud_port}/healthz", ca_file=run.cloud_ca)
    _wait_ready(api, f"http://127.0.0.1:{api_port}/readyz")
    return worker


def _submit_and_follow(
    api_url: str,
    request: dict[str, Any],
    err: Console,
    *,
    timeout: float,
    on_update: Callable[[JobUpdate], None] | None,
) -> JobDocument:
    """Submit ``request`` to the API and follow the job to its end; the final document."""
    with Client(api_url, api_key="") as client:
        job = client.submit(request, idempotency_key=f"demo-{secrets.token_hex(8)}")
        err.print(f"submitted job [bold]{job.id}[/] (202 Accepted)")
        return job.wait(timeout=timeout, on_update=on_update)
