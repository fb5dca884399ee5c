"""The worker process: a queue consumer (Huey or SQS) running the journey, plus the reconciler.

Stopping: SIGTERM (what supervisors send) lets the steps in flight finish for up to
``QHYBRID_WORKER_SHUTDOWN_SECONDS``; SIGINT (Ctrl-C), or a second signal, stops at once. Either
way, a job whose step is still running when the worker exits is released (its lease given back)
and kicked, so another worker redoes that step now rather than after the lease expires. Redoing a
step is safe: every step is written to survive a worker that dies anywhere in it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from qhybrid.backends.registry import BackendRegistry
from qhybrid.core.config import Settings
from qhybrid.core.metrics import serve_worker_metrics
from qhybrid.jobs.database import Database
from qhybrid.jobs.journey import Journey, owner_prefix
from qhybrid.jobs.queue import make_queue
from qhybrid.jobs.reconciler import Reconciler
from qhybrid.jobs.store import JobStore
from qhybrid.portfolio import kernels
from qhybrid.quantum.circuit import transpile_on_calling_thread
from qhybrid.quantum.simulator import pin_single_threaded_blas

log = logging.getLogger("qhybrid.worker")


def unshared_secrets(settings: Settings) -> list[str]:
    """Warnings for the keys a shared database needs shared, but this host reads from its own files.

    A database other than SQLite can be reached from several hosts; then every worker must hold
    the same KEK (sealed job keys) and the same token key (stored client tokens), from the secret
    manager. A key file under the data dir is this host's alone.
    """
    if settings.resolved_database_url.startswith("sqlite"):
        return []
    warnings = []
    if settings.key_encryption_key is None:
        warnings.append(
            f"QHYBRID_KEY_ENCRYPTION_KEY is not set: this host seals job keys with its own "
            f"{settings.kek_path}; if workers run on more than one host, set the same key on all"
        )
    if settings.egress_token_key is None:
        warnings.append(
            f"QHYBRID_EGRESS_TOKEN_KEY is not set: this host mints provider tokens with its own "
            f"{settings.token_key_path}; if workers run on more than one host, set the same key on all"
        )
    return warnings


class Worker:
    """Everything a worker process owns, wired from the settings.

    Args:
        settings: Database, queue and provider configuration.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Before any thread starts: one job per worker thread, so no thread pool per transpile.
        transpile_on_calling_thread()
        # And one BLAS thread for the whole process, held by this thread (see the function).
        pin_single_threaded_blas()
        settings.ensure_dirs()
        self.db = Database(settings.resolved_database_url)
        self.db.migrate()
        self.store = JobStore(self.db)
        self.backends = BackendRegistry(settings)
        self.queue = make_queue(settings)
        self.journey = Journey(settings, self.store, self.queue, self.backends)
        self.queue.handler = self._advance
        # A job id may be handed to two threads at once (a duplicate kick): count, not a set.
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop_signal: str | None = None
        self._stop_started: float | None = None

    def _advance(self, job_id: str) -> None:
        with self._lock:
            self._in_flight[job_id] += 1
        try:
            self.journey.advance(job_id)
        finally:
            with self._lock:
                self._in_flight[job_id] -= 1
                if not self._in_flight[job_id]:
                    del self._in_flight[job_id]

    def run(self, *, threads: int | None = None) -> None:
        """Consume until SIGINT/SIGTERM; the reconciler sweeps in the background meanwhile.

        Before anything else, the SDKs' egress is put under the gateway and its hooks are tested
        (:meth:`BackendRegistry.enforce_sdk_policy`): a worker whose hooks do not fire never starts.
        """
        self.backends.enforce_sdk_policy()
        # The annealing reference's compiled step: compiled now (about a second), not in the
        # FINALIZING of the first job.
        kernels.warm_up()
        reconciler = Reconciler(
            self.store,
            self.queue,
            interval=self.settings.reconcile_interval_seconds,
            grace_seconds=self.settings.reconcile_grace_seconds,
        )
        consumer = self.queue.consumer(
            workers=threads or self.settings.worker_threads,
            shutdown_timeout=self.settings.worker_shutdown_seconds,
            on_stop=self._on_stop,
        )
        reconciler.start()
        metrics = serve_worker_metrics(self.settings.worker_metrics_port)
        for warning in unshared_secrets(self.settings):
            log.warning(warning)
        log.info(
            "worker ready: database=%s queue=%s threads=%d",
            self.db.engine.url.get_backend_name(),
            self.queue.engine,
            threads or self.settings.worker_threads,
        )
        try:
            consumer.run()
        finally:
            stopping = self._stop_started or time.monotonic()
            reconciler.stop()
            if metrics is not None:
                metrics.shutdown()
                metrics.server_close()
            released = self.release_in_flight()
            self.backends.close()
            self.db.dispose()
            log.info(
                "worker stopped (%s) %.1f s after the signal; %s",
                self._stop_signal or "consumer ended",
                time.monotonic() - stopping,
                f"released {len(released)} job(s) to other workers: {', '.join(released)}"
                if released
                else "no step was left unfinished",
            )

    def _on_stop(self, signal_name: str, graceful: bool) -> None:
        self._stop_signal = signal_name
        self._stop_started = time.monotonic()
        with self._lock:
            running = sum(self._in_flight.values())
        if graceful and running:
            log.info(
                "worker stopping on %s: letting %d running step(s) finish (up to %g s)",
                signal_name,
                running,
                self.settings.worker_shutdown_seconds,
            )
        else:
            log.info("worker stopping on %s: %d running step(s) to release", signal_name, running)

    def release_in_flight(self) -> list[str]:
        """Give back the lease of every job whose step has not finished, and kick it.

        Returns:
            The released job ids.
        """
        with self._lock:
            job_ids = sorted(self._in_flight)
        prefix = owner_prefix()
        released = []
        for job_id in job_ids:
            job = self.store.get_job(job_id)
            if job is None or not (job.lease_owner or "").startswith(prefix):
                continue
            if self.store.release(job_id, owner=job.lease_owner or ""):
                released.append(job_id)
                try:
                    self.queue.kick(job_id)
                except Exception:  # the reconciler kicks it later: released is what matters
                    log.warning("job %s released but the queue could not be reached", job_id)
        return released
