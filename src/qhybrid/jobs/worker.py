"""The worker process: a Huey consumer running the journey, plus the reconciler."""

from __future__ import annotations

import logging

from qhybrid.backends.registry import BackendRegistry
from qhybrid.core.config import Settings
from qhybrid.jobs.database import Database
from qhybrid.jobs.journey import Journey
from qhybrid.jobs.queue import JobQueue, make_huey
from qhybrid.jobs.reconciler import Reconciler
from qhybrid.jobs.store import JobStore

log = logging.getLogger("qhybrid.worker")


class Worker:
    """Everything a worker process owns, wired from the settings.

    Args:
        settings: Database, queue and provider configuration.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.ensure_dirs()
        self.db = Database(settings.resolved_database_url)
        self.db.migrate()
        self.store = JobStore(self.db)
        self.backends = BackendRegistry(settings)
        self.queue = JobQueue(make_huey(settings))
        self.journey = Journey(settings, self.store, self.queue, self.backends)
        self.queue.handler = self.journey.advance

    def run(self, *, threads: int | None = None) -> None:
        """Consume until SIGINT/SIGTERM; the reconciler sweeps in the background meanwhile.

        Before anything else, the SDKs' egress is put under the gateway and its hooks are tested
        (:meth:`BackendRegistry.enforce_sdk_policy`): a worker whose hooks do not fire never starts.
        """
        self.backends.enforce_sdk_policy()
        reconciler = Reconciler(
            self.store,
            self.queue,
            interval=self.settings.reconcile_interval_seconds,
            grace_seconds=self.settings.reconcile_grace_seconds,
        )
        consumer = self.queue.consumer(workers=threads or self.settings.worker_threads)
        reconciler.start()
        log.info(
            "worker ready: database=%s queue=%s threads=%d",
            self.db.engine.url.get_backend_name(),
            "redis" if self.settings.redis_url else "sqlite",
            threads or self.settings.worker_threads,
        )
        try:
            consumer.run()
        finally:
            reconciler.stop()
            self.backends.close()
            self.db.dispose()
