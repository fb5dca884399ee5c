"""Which adapter serves which backend name; one shared instance per name and process."""

from __future__ import annotations

import threading

from qhybrid.backends.base import PermanentBackendError, QuantumBackend
from qhybrid.backends.cloud import CloudBackend
from qhybrid.core.config import KNOWN_BACKENDS, Settings
from qhybrid.gateway.client import EgressClient


class BackendRegistry:
    """Builds backend adapters from the settings, lazily, and keeps them for reuse.

    Args:
        settings: Where the providers are and how to reach them.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._backends: dict[str, QuantumBackend] = {}
        self._egress = EgressClient(
            [settings.cloud_url, *settings.egress_allow],
            timeout=settings.backend_timeout_seconds,
            ca_file=settings.cloud_ca_file,
        )

    @staticmethod
    def names() -> tuple[str, ...]:
        """Backend names requests may use."""
        return KNOWN_BACKENDS

    def get(self, name: str) -> QuantumBackend:
        """The adapter for ``name``.

        Raises:
            PermanentBackendError: If no backend has that name.
        """
        with self._lock:
            backend = self._backends.get(name)
            if backend is None:
                backend = self._build(name)
                self._backends[name] = backend
            return backend

    def _build(self, name: str) -> QuantumBackend:
        settings = self._settings
        if name == "local":
            # The local backend is the emulated public cloud on loopback, reached through the same
            # egress gateway a real provider would be: one code path, tested for real.
            return CloudBackend(
                name=name,
                base_url=settings.cloud_url,
                token=settings.cloud_token,
                device=settings.cloud_device,
                egress=self._egress,
            )
        raise PermanentBackendError(f"unknown backend {name!r}; known: {', '.join(KNOWN_BACKENDS)}")

    def close(self) -> None:
        """Close every adapter and the egress client."""
        with self._lock:
            for backend in self._backends.values():
                backend.close()
            self._backends.clear()
        self._egress.close()
