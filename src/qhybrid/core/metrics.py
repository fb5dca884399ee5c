"""Prometheus metrics of every trusted-zone process, all named ``qhybrid_…``.

Each process counts what it does: the API its requests, the workers the jobs' transitions, the
time spent in each state, provider tasks, retries, fallbacks, and the egress gateway's requests,
bytes and audit entries. Labels are bounded sets (route templates, state names, backend names,
destinations): never a job id, a tenant's data or a raw path.

Where the numbers are served (see ``docs/operations.md``):

- the API's ``GET /metrics``: its own metrics, plus the jobs by state and the queue depth, read
  when Prometheus scrapes (one query per scrape, none per request);
- a worker's own port, ``QHYBRID_WORKER_METRICS_PORT`` (:func:`serve_worker_metrics`);
- or, for several processes on one host, ``PROMETHEUS_MULTIPROC_DIR``: every process writes its
  samples there (prometheus-client's multiprocess mode) and the API's ``/metrics`` adds them up.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger("qhybrid.metrics")

#: prometheus-client's variable: set, every process writes its samples to files in that folder.
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

#: Seconds buckets for steps that take from milliseconds (a request) to hours (a QPU queue).
_LONG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)

HTTP_REQUESTS = Counter(
    "qhybrid_http_requests",
    "API requests answered, by route template, method and status code.",
    ["route", "method", "code"],
)
HTTP_DURATION = Histogram(
    "qhybrid_http_request_duration_seconds",
    "Time to answer an API request (to its first response byte for streams).",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
JOB_TRANSITIONS = Counter(
    "qhybrid_job_transitions",
    "Job transitions recorded, by the state left and the state entered.",
    ["from_state", "to_state"],
)
STATE_SECONDS = Histogram(
    "qhybrid_job_state_seconds",
    "Time a job spent in a state, observed when it leaves the state.",
    ["state"],
    buckets=_LONG_BUCKETS,
)
PROVIDER_TASK_SECONDS = Histogram(
    "qhybrid_provider_task_seconds",
    "From a provider task's submission to its end (completed, failed or cancelled), by backend.",
    ["backend", "outcome"],
    buckets=_LONG_BUCKETS,
)
STEP_RETRIES = Counter(
    "qhybrid_step_retries",
    "Steps retried after a transient (or unexpected) error, by the job's state.",
    ["state"],
)
REMOTE_RESUBMISSIONS = Counter(
    "qhybrid_remote_resubmissions",
    "Provider tasks submitted again after the previous attempt's task failed, by backend.",
    ["backend"],
)
FALLBACKS = Counter(
    "qhybrid_fallbacks",
    "Jobs answered classically because the QPU could not answer, by the state they left.",
    ["state"],
)
EGRESS_REQUESTS = Counter(
    "qhybrid_egress_requests",
    "Requests through the egress gateway, by destination and outcome "
    "(the status class, 'refused' by the policy, or 'error' on the network).",
    ["destination", "outcome"],
)
EGRESS_BYTES = Counter(
    "qhybrid_egress_bytes",
    "Body bytes through the egress gateway, by destination and direction "
    "(sent; received when the response declared its length).",
    ["destination", "direction"],
)
AUDIT_ENTRIES = Counter(
    "qhybrid_audit_entries",
    "Entries written to the hash-chained egress audit log (outcome: written or failed).",
    ["outcome"],
)

_STATUS_CLASS = re.compile(r"^[1-5]")


def status_class(code: int) -> str:
    """``2xx``, ``4xx``…: the outcome label of an HTTP status."""
    text = str(code)
    return f"{text[0]}xx" if _STATUS_CLASS.match(text) else "other"


def multiprocess_dir() -> str | None:
    """The shared samples folder when prometheus-client's multiprocess mode is on."""
    return os.environ.get(MULTIPROC_VARIABLE) or None


def scrape_registry(extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """The registry to serve: this process's (or every process's, in multiprocess mode), plus ``extra``.

    Args:
        extra: Collectors read at scrape time (the API's jobs-by-state and queue depth).
    """
    if multiprocess_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    for collector in extra:
        registry.register(collector)
    return registry


class _Forward(Collector):
    """The process's default registry, served inside another registry next to extra collectors."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterable:  # type: ignore[type-arg]
        """Everything the default registry holds."""
        return self._source.collect()


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The Prometheus text of ``registry`` and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve_worker_metrics(
    port: int | None,
    *,
    # Every interface: Prometheus scrapes from its own host. The page holds counts only (no job
    # id, no tenant, no business data); the deployment's network policy decides who reaches it.
    host: str = "0.0.0.0",  # noqa: S104
    started: Callable[[int], None] | None = None,
) -> WSGIServer | None:
    """Serve this process's metrics on ``host:port`` (a daemon thread), when a port is configured.

    Port 0 takes a free port; ``started`` is told the port actually bound. In multiprocess mode the
    samples are the API's to serve and nothing starts here.

    Returns:
        The server, to ``shutdown()`` when the worker stops; ``None`` when nothing was started.
    """
    if port is None or multiprocess_dir():
        return None
    server, thread = start_http_server(port, addr=host)
    bound = int(server.server_address[1])
    log.info("worker metrics on http://%s:%d/metrics", host, bound)
    if started is not None:
        started(bound)
    del thread  # a daemon: it ends with the process, or when the server shuts down
    return server
