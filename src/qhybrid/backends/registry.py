"""Backend names, what serves each, and what the API can know about them without calling out.

| name | adapter |
|---|---|
| ``emulated-cloud`` (aliases ``local``, ``cloud``) | the emulated public cloud (``qhybrid cloud``): a |
|   | separate process reached over HTTPS through the egress gateway at ``QHYBRID_CLOUD_URL`` |
| ``braket-local``, ``braket-local:dm`` | Braket SDK ``LocalSimulator``, in a detached local process |
| ``braket:<device ARN>`` | a real Amazon Braket device (QPU or managed simulator) |
| ``ibm-local:<FakeName>`` | qiskit-ibm-runtime local testing mode with a fake backend (``FakeTorino``), |
|   | in a detached local process |
| ``ibm:<backend>`` | a real IBM Quantum backend through Qiskit Runtime |

One adapter instance per name and process, built lazily.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from qhybrid.backends.base import PermanentBackendError, QuantumBackend
from qhybrid.backends.braket import BraketBackend, BraketLocalSimulatorBackend
from qhybrid.backends.detached import DetachedTaskRunner
from qhybrid.backends.emulated_cloud import EmulatedCloudBackend
from qhybrid.backends.ibm import IBMBackend, IBMFakeBackend
from qhybrid.backends.pricing import (
    IBM_PRICING,
    SIMULATOR_MINIMUM_SECONDS,
    braket_pricing,
    estimate_qpu_seconds,
)
from qhybrid.core.config import DEV_CLOUD_TOKEN, Settings, is_loopback_url
from qhybrid.domain.device import Pricing
from qhybrid.domain.request import DEFAULT_BACKEND
from qhybrid.gateway.audit import AuditLog
from qhybrid.gateway.egress import Destination, EgressClient, destination_of
from qhybrid.gateway.payload import SubmissionPolicy
from qhybrid.gateway.routes import RouteTable, emulated_cloud_routes
from qhybrid.gateway.sdk import (
    BRAKET_DEVICE_ARN,
    IBM_BACKEND_NAME,
    IbmEndpoints,
    RequestsPolicy,
    braket_routes,
    check_braket_device_arn,
    ibm_routes,
    install_requests_guard,
    self_test,
)
from qhybrid.gateway.tls import TLS12_COMPATIBLE_GROUPS, TlsPolicy
from qhybrid.gateway.tokens import TokenMinter, load_token_key

#: Names of the emulated public cloud: ``local`` and ``cloud`` are kept as aliases of the first.
EMULATED_CLOUD_NAMES = (DEFAULT_BACKEND, "local", "cloud")

#: Local simulators' qubit limits (Braket SDK ``LocalSimulator(...).properties``).
BRAKET_LOCAL_SIMULATORS = {"sv": ("braket_sv", 26), "dm": ("braket_dm", 13)}


@dataclass(frozen=True)
class BackendName:
    """A parsed backend name.

    Attributes:
        kind: ``cloud``, ``braket-local``, ``braket``, ``ibm-local`` or ``ibm``.
        device: The device within the kind (simulator, ARN, fake backend or IBM backend name).
    """

    kind: str
    device: str


def cloud_token(settings: Settings) -> str:
    """The emulated cloud's bearer token.

    Raises:
        PermanentBackendError: For the development token and a cloud that is not on loopback
            (settings copied without validation reach here too).
    """
    token = settings.cloud_token.get_secret_value()
    if token == DEV_CLOUD_TOKEN and not is_loopback_url(settings.cloud_url):
        raise PermanentBackendError(
            f"the default development token is refused for {settings.cloud_url}: set QHYBRID_CLOUD_TOKEN"
        )
    return token


def parse_backend_name(name: str) -> BackendName:
    """Parse a request's ``backend``.

    Raises:
        ValueError: With a message listing the accepted forms.
    """
    kind, _, device = name.partition(":")
    if name in EMULATED_CLOUD_NAMES:
        return BackendName("cloud", name)
    if kind == "braket-local":
        flavour = device or "sv"
        if flavour not in BRAKET_LOCAL_SIMULATORS:
            raise ValueError(
                f"unknown Braket local simulator {flavour!r}; use braket-local or braket-local:dm"
            )
        return BackendName("braket-local", flavour)
    if kind == "braket" and device.startswith("arn:aws:braket:"):
        if BRAKET_DEVICE_ARN.fullmatch(device) is None:
            # The form only: whether the region is the deployment's is check_backend's question.
            raise ValueError(
                f"{device!r} is not a Braket device ARN "
                "(arn:aws:braket:<region>::device/<qpu|quantum-simulator>/<provider>/<name>)"
            )
        return BackendName("braket", device)
    if kind == "ibm-local" and device:
        if device not in fake_backend_names():
            raise ValueError(
                f"unknown IBM fake backend {device!r}; e.g. FakeTorino, FakeFez, FakeMarrakesh "
                f"({len(fake_backend_names())} available in qiskit_ibm_runtime.fake_provider)"
            )
        return BackendName("ibm-local", device)
    if kind == "ibm" and device:
        if IBM_BACKEND_NAME.fullmatch(device) is None:
            raise ValueError(f"{device!r} is not an IBM backend name (ibm_, then a-z, 0-9, _)")
        return BackendName("ibm", device)
    raise ValueError(
        f"unknown backend {name!r}; use emulated-cloud (or local), braket-local[:dm], braket:<device ARN>, "
        "ibm-local:<FakeName> (e.g. ibm-local:FakeTorino) or ibm:<backend name>"
    )


@lru_cache(maxsize=1)
def fake_backend_catalog() -> dict[str, int]:
    """qiskit-ibm-runtime's fake backends: class name (``FakeTorino``) → number of qubits.

    The qubit count comes from each backend's configuration file (``dirname``/``conf_filename``,
    class attributes of every ``FakeBackendV2``), without building the backends. The first call
    imports qiskit-ibm-runtime, which is slow and has crashed a process when first done on a
    request thread: the API calls this once at start (:func:`warm_up`).
    """
    from qiskit_ibm_runtime import fake_provider
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    catalog: dict[str, int] = {}
    for name in sorted(dir(fake_provider)):
        cls = getattr(fake_provider, name)
        conf_name = getattr(cls, "conf_filename", None)
        folder = getattr(cls, "dirname", None)
        if not (isinstance(cls, type) and issubclass(cls, FakeBackendV2) and conf_name and folder):
            continue
        conf = Path(folder) / conf_name
        if conf.exists():
            catalog[name] = int(json.loads(conf.read_text())["n_qubits"])
    return catalog


def warm_up() -> None:
    """Load what validating backend names needs, on the calling (main) thread."""
    fake_backend_catalog()


def fake_backend_names() -> frozenset[str]:
    """Class names of qiskit-ibm-runtime's fake backends (``FakeTorino``...)."""
    return frozenset(fake_backend_catalog())


def check_backend(name: str, settings: Settings) -> str | None:
    """Why a request may not use ``name`` here (unknown, or its provider not configured), or ``None``."""
    try:
        parsed = parse_backend_name(name)
    except ValueError as exc:
        return str(exc)
    if parsed.kind == "braket":
        if not settings.braket_s3_bucket:
            return "Braket devices need QHYBRID_BRAKET_S3_BUCKET (where Braket writes results)"
        if not settings.aws_region:
            return "Braket devices need QHYBRID_AWS_REGION (every AWS destination is derived from it)"
        try:
            check_braket_device_arn(parsed.device, settings.aws_region)
        except ValueError as exc:
            return str(exc)
    if parsed.kind == "ibm":
        if settings.ibm_token is None:
            return "IBM Quantum backends need QHYBRID_IBM_TOKEN and QHYBRID_IBM_INSTANCE"
        if not (settings.ibm_instance or "").startswith("crn:v1:"):
            return "IBM Quantum backends need QHYBRID_IBM_INSTANCE set to the instance CRN (crn:v1:...)"
    return None


def ibm_requests_policy(settings: Settings, audit: AuditLog, tokens: TokenMinter) -> RequestsPolicy:
    """The policy every ``requests`` call of a worker runs under (IBM's SDKs are the only users).

    With IBM configured: its endpoints, derived from ``QHYBRID_IBM_URL`` and the instance CRN,
    plus ``QHYBRID_EGRESS_ALLOW``, and IBM's route table. Without: nothing is allowed.
    """
    key = settings.ibm_token.get_secret_value() if settings.ibm_token is not None else None
    instance = settings.ibm_instance
    if key is None or not instance:
        return RequestsPolicy(allowed=frozenset(), routes=RouteTable([]), audit=audit)
    endpoints = IbmEndpoints.derive(settings.ibm_url, instance)
    extras = {a if "://" not in a else destination_of(a) for a in settings.egress_allow}
    return RequestsPolicy(
        allowed=endpoints.destinations() | extras,
        routes=ibm_routes(
            endpoints, api_key=key, tokens=tokens, max_execution_time=settings.ibm_max_execution_time
        ),
        audit=audit,
        api_key=key,
        instance=instance,
    )


def known_capacity(name: str) -> int | None:
    """Qubits of the device behind ``name`` when known without calling a provider, else ``None``."""
    parsed = parse_backend_name(name)
    if parsed.kind == "braket-local":
        return BRAKET_LOCAL_SIMULATORS[parsed.device][1]
    if parsed.kind == "ibm-local":
        return fake_backend_catalog()[parsed.device]
    return None


def static_pricing(name: str, settings: Settings) -> Pricing | None:
    """The published price list of ``name``'s device, without calling the provider.

    Raises:
        LookupError: For a paid device whose price is not in the tables (so it never looks free).
    """
    parsed = parse_backend_name(name)
    if parsed.kind == "cloud":
        return settings.cloud_pricing()
    if parsed.kind == "braket":
        pricing = braket_pricing(parsed.device)
        if pricing is None:
            raise LookupError(f"no published price for {parsed.device} in qhybrid's Braket price table")
        return pricing
    if parsed.kind == "ibm":
        return IBM_PRICING
    return None


def static_seconds(name: str, shots: int) -> float:
    """QPU seconds a task of ``shots`` shots is expected to bill, for per-second price lists."""
    parsed = parse_backend_name(name)
    if parsed.kind == "ibm":
        return estimate_qpu_seconds(shots)
    if parsed.kind == "braket":
        return SIMULATOR_MINIMUM_SECONDS if "/quantum-simulator/" in parsed.device else 0.0
    return 0.0


class BackendRegistry:
    """Builds backend adapters from the settings, lazily, and keeps them for reuse.

    Args:
        settings: Where the providers are and how to reach them.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._backends: dict[str, QuantumBackend] = {}
        policy = TlsPolicy(
            min_version=settings.egress_min_tls,
            # TLS 1.2 peers with ECDSA P-256 certificates need P-256 among the offered groups.
            groups=TLS12_COMPATIBLE_GROUPS if settings.egress_min_tls == "1.2" else "X25519MLKEM768:X25519",
            require_pqc=settings.egress_require_pqc,
            ca_file=settings.cloud_ca_file,
        )
        self.audit = AuditLog(settings.audit_path)
        key = settings.egress_token_key
        self.tokens = TokenMinter(
            load_token_key(key.get_secret_value() if key else None, settings.token_key_path)
        )
        submissions = SubmissionPolicy(
            device=settings.cloud_device,
            tokens=self.tokens,
            max_shots=settings.max_shots,
            max_bits=settings.max_qubits,
        )
        cloud = Destination(
            settings.cloud_url,
            emulated_cloud_routes(submissions),
            authorization=f"Bearer {cloud_token(settings)}",
        )
        self._egress = EgressClient(
            [cloud],
            timeout=settings.backend_timeout_seconds,
            tls=policy,
            audit=self.audit,
            allow_plaintext=settings.egress_allow_plaintext,
            tokens=self.tokens,
            keepalive_seconds=settings.egress_keepalive_seconds,
        )
        self._runner: DetachedTaskRunner | None = None

    def enforce_sdk_policy(self) -> None:
        """Put the SDKs' traffic of this process under the gateway, and prove the hooks fire.

        The worker calls this before it takes a job: every ``requests`` call is then checked and
        audited (:func:`ibm_requests_policy`), and :func:`~qhybrid.gateway.sdk.self_test` sends a
        request to a refused destination through each hook; if one did not fire, or a dependency
        changed what the hooks rely on, it raises and the worker does not start.

        Raises:
            SdkHookError: If a hook did not fire.
        """
        install_requests_guard(ibm_requests_policy(self._settings, self.audit, self.tokens))
        self_test(self.audit)

    def mint_token(self) -> str:
        """A client token for a provider task, minted by the gateway (the journey stores it first)."""
        return self.tokens.mint()

    def minted(self, token: str) -> bool:
        """Whether this gateway's key minted ``token``, so that its route table lets it through."""
        return self.tokens.is_minted(token)

    def get(self, name: str) -> QuantumBackend:
        """The adapter for ``name``.

        Raises:
            PermanentBackendError: If no backend has that name or its provider is not configured.
        """
        with self._lock:
            backend = self._backends.get(name)
            if backend is None:
                backend = self._build(name)
                self._backends[name] = backend
            return backend

    def _detached_runner(self) -> DetachedTaskRunner:
        if self._runner is None:
            self._runner = DetachedTaskRunner(self._settings.data_dir / "local-tasks")
        return self._runner

    def _build(self, name: str) -> QuantumBackend:
        settings = self._settings
        problem = check_backend(name, settings)
        if problem is not None:
            raise PermanentBackendError(problem)
        parsed = parse_backend_name(name)
        if parsed.kind == "cloud":
            # The emulated public cloud (or any provider speaking its API), reached through the
            # egress gateway exactly as a real provider would be.
            return EmulatedCloudBackend(
                name=name,
                base_url=settings.cloud_url,
                device=settings.cloud_device,
                egress=self._egress,
                pricing=settings.cloud_pricing(),
            )
        if parsed.kind == "braket-local":
            return BraketLocalSimulatorBackend(
                name=name, runner=self._detached_runner(), simulator=BRAKET_LOCAL_SIMULATORS[parsed.device][0]
            )
        if parsed.kind == "ibm-local":
            return IBMFakeBackend(name=name, runner=self._detached_runner(), fake_name=parsed.device)
        if parsed.kind == "braket":
            assert settings.braket_s3_bucket is not None
            assert settings.aws_region is not None
            return BraketBackend(
                name=name,
                device_arn=parsed.device,
                s3_bucket=settings.braket_s3_bucket,
                s3_prefix=settings.braket_s3_prefix,
                region=settings.aws_region,
                audit=self.audit,
                routes=braket_routes(
                    region=settings.aws_region,
                    bucket=settings.braket_s3_bucket,
                    prefix=settings.braket_s3_prefix.strip("/") or "qhybrid",
                    tokens=self.tokens,
                    max_shots=settings.max_shots,
                ),
                extra_allowed=settings.egress_allow,
                instance_metadata=settings.aws_instance_metadata,
            )
        assert settings.ibm_token is not None
        return IBMBackend(
            name=name,
            backend_name=parsed.device,
            token=settings.ibm_token.get_secret_value(),
            instance=settings.ibm_instance,
            channel=settings.ibm_channel,
            url=settings.ibm_url,
            max_execution_time=settings.ibm_max_execution_time,
            execution_mode=settings.ibm_execution_mode,
            audit=self.audit,
        )

    def close(self) -> None:
        """Close every adapter and the egress client."""
        with self._lock:
            for backend in self._backends.values():
                backend.close()
            self._backends.clear()
        self._egress.close()
