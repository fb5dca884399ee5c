"""``GET /metrics``: Prometheus text, the API's own metrics plus the jobs by state and the queue depth."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from qhybrid.api.deps import AppServices, ServicesDep, TenantDep
from qhybrid.api.errors import ApiError, error_responses
from qhybrid.core.metrics import exposition, scrape_registry
from qhybrid.domain.states import JobState

log = logging.getLogger("qhybrid.api")
router = APIRouter(tags=["operations"])


class StoreCollector(Collector):
    """What the database and the queue say at scrape time: one query and one queue call per scrape."""

    def __init__(self, services: AppServices) -> None:
        self._services = services

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """``qhybrid_jobs{state}``, ``qhybrid_queue_pending`` and ``qhybrid_queue_scheduled``."""
        jobs = GaugeMetricFamily("qhybrid_jobs", "Jobs in the database, by state.", labels=["state"])
        try:
            counts = self._services.store.count_by_state()
        except Exception:
            # A scrape must not fail because the database hiccups; the series is absent meanwhile.
            log.warning("metrics: could not count the jobs by state", exc_info=True)
        else:
            for state in JobState:
                jobs.add_metric([state.api_name], counts.get(state, 0))
            yield jobs
        for name, what, read in (
            (
                "qhybrid_queue_pending",
                "Queue messages waiting to be consumed now.",
                self._services.queue.pending,
            ),
            (
                "qhybrid_queue_scheduled",
                "Queue messages waiting for their time (polls, retries).",
                self._services.queue.scheduled,
            ),
        ):
            try:
                value = read()
            except Exception:
                log.warning("metrics: could not read %s", name, exc_info=True)
                continue
            yield GaugeMetricFamily(name, what, value=value)


_TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format."}
}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    operation_id="metrics",
    response_class=Response,
    responses=_TEXT | error_responses(401, 403),
)
def metrics(services: ServicesDep, tenant: TenantDep) -> Response:
    """Counters and histograms of this API, and the jobs by state and the queue depth as of now.

    With ``PROMETHEUS_MULTIPROC_DIR``, the counters of every process writing there (workers
    included). Once API keys exist, only a key of the operations tenant (``QHYBRID_METRICS_TENANT``)
    reads them: the counts are the whole deployment's, not one tenant's.
    """
    if tenant != services.settings.metrics_tenant and not services.auth.is_open():
        raise ApiError(
            403,
            "forbidden",
            "authorization: /metrics is read with a key of the operations tenant "
            f"{services.settings.metrics_tenant!r} (QHYBRID_METRICS_TENANT)",
            field="authorization",
        )
    body, content_type = exposition(scrape_registry([StoreCollector(services)]))
    return Response(body, media_type=content_type)
