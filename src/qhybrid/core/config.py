"""Settings for every trusted-zone process, read from ``QHYBRID_*`` environment variables.

Unset, everything falls back to the embedded default: SQLite files under ``./.qhybrid/``, a
``SqliteHuey`` queue next to them and the emulated cloud on loopback. Setting
``QHYBRID_DATABASE_URL`` and ``QHYBRID_REDIS_URL`` (or ``QHYBRID_QUEUE_URL``, which also takes
``sqs://…``) switches to PostgreSQL and Redis or Amazon SQS.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from qhybrid.core.files import private_dir
from qhybrid.domain.device import Pricing
from qhybrid.domain.privacy import PrivacyLevel

#: A tenant name (the same rule as :data:`qhybrid.jobs.tenants.TENANT_PATTERN`).
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def split_api_key(entry: str) -> tuple[str, str]:
    """``tenant:key`` → (tenant, key); a bare ``key`` belongs to tenant ``default``."""
    tenant, separator, key = entry.partition(":")
    return (tenant.strip(), key.strip()) if separator else ("default", entry.strip())


_RATE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d*)\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def parse_rate(text: str) -> tuple[int, int] | None:
    """``'60/minute'`` → (60, 60): the count and the window in seconds; ``None`` if malformed."""
    match = _RATE.match(text)
    if match is None or int(match.group(1)) < 1:
        return None
    multiple = int(match.group(2) or 1)
    if multiple < 1:
        return None
    return int(match.group(1)), multiple * _UNIT_SECONDS[match.group(3).lower()]


#: The emulated cloud's development token; refused unless the cloud is on loopback.
DEV_CLOUD_TOKEN = "local-dev-token"  # noqa: S105 - public on purpose, and refused off loopback
#: Settings holding URLs that may carry a password; ``repr`` masks it.
_URL_FIELDS = frozenset({"database_url", "redis_url", "queue_url", "cloud_url", "ibm_url"})


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is ``localhost`` or a loopback address."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mask_url(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


#: URL schemes ``QHYBRID_QUEUE_URL`` accepts.
QUEUE_SCHEMES = frozenset({"sqs", "redis", "rediss", "unix"})


class Settings(BaseSettings):
    """Configuration of the API, the worker and the CLI (environment prefix ``QHYBRID_``)."""

    model_config = SettingsConfigDict(env_prefix="QHYBRID_", extra="ignore")

    data_dir: Path = Field(default=Path(".qhybrid"), description="Embedded-default state and logs.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; unset means SQLite at <data_dir>/qhybrid.db."
    )
    redis_url: str | None = Field(default=None, description="Redis URL; unset means SqliteHuey.")
    queue_url: str | None = Field(
        default=None,
        description=(
            "The queue engine by URL: sqs://<queue-name>?region=…&endpoint=…&create=… (Amazon SQS) or "
            "redis://… (RedisHuey, as QHYBRID_REDIS_URL); unset: QHYBRID_REDIS_URL, else SqliteHuey."
        ),
    )
    queue_name: str = Field(default="qhybrid", description="Huey queue name (Redis key prefix).")

    cloud_url: str = Field(default="https://127.0.0.1:8780", description="Emulated cloud base URL.")
    cloud_ca_file: Path | None = Field(
        default=None,
        description="PEM certificate to verify the cloud with (the emulated cloud's is self-signed).",
    )
    cloud_token: SecretStr = Field(
        default=SecretStr(DEV_CLOUD_TOKEN),
        description="Bearer token for the cloud; the default is refused unless the cloud is on loopback.",
    )
    cloud_device: str = Field(default="emulator", description="Device name on the emulated cloud.")
    cloud_price_per_task: float = Field(default=0.0, ge=0, description="Price list of the emulated cloud.")
    cloud_price_per_shot: float = Field(default=0.0, ge=0, description="Price list of the emulated cloud.")

    aws_region: str | None = Field(default=None, description="AWS region for Braket simulators.")
    braket_s3_bucket: str | None = Field(default=None, description="S3 bucket Braket writes results to.")
    braket_s3_prefix: str = Field(default="qhybrid", description="Key prefix in that bucket.")
    ibm_channel: str = Field(default="ibm_quantum_platform", description="Qiskit Runtime channel.")
    ibm_token: SecretStr | None = Field(default=None, description="IBM Quantum API key.")
    ibm_instance: str | None = Field(default=None, description="IBM Quantum instance (CRN).")
    ibm_execution_mode: Literal["job", "batch"] = Field(
        default="job", description="Qiskit Runtime execution mode for real IBM backends."
    )
    ibm_max_execution_time: int = Field(
        default=300, ge=1, description="Seconds IBM may run a job (caps cost)."
    )

    privacy_default: PrivacyLevel = Field(
        default="standard", description="Obfuscation level of requests that set none."
    )
    privacy_noise_key: SecretStr | None = Field(
        default=None,
        description="Base64 32-byte key of the keyed obfuscation noise; unset: <data_dir>/proxy/noise-key.",
    )
    key_encryption_key: SecretStr | None = Field(
        default=None, description="Base64 32-byte key sealing obfuscation keys; unset: <data_dir>/keys/kek."
    )
    egress_require_pqc: bool = Field(
        default=False, description="Refuse egress TLS links without a hybrid post-quantum key exchange."
    )
    egress_min_tls: Literal["1.2", "1.3"] = Field(default="1.3", description="Lowest TLS version for egress.")
    egress_allow_plaintext: bool = Field(
        default=False, description="Allow http:// egress (development only)."
    )
    egress_keepalive_seconds: float = Field(
        default=2.0,
        ge=0.0,
        le=60.0,
        description="Keep an egress connection this long for the next request to the same provider "
        "(each request still audited, with that connection's TLS facts); 0: a fresh handshake per request.",
    )

    egress_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra host:port pairs the providers' SDKs may reach (e.g. a VPC endpoint).",
    )
    egress_token_key: SecretStr | None = Field(
        default=None,
        description="Base64 32-byte key of the gateway's client tokens; unset: <data_dir>/gateway/token-key.",
    )
    ibm_url: str = Field(
        default="https://cloud.ibm.com", description="IBM Cloud URL the IBM endpoints are derived from."
    )
    aws_instance_metadata: bool = Field(
        default=False, description="Let botocore ask the EC2 instance metadata service for credentials."
    )

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated 'tenant:key' pairs (a bare key belongs to tenant 'default'); "
        "with any key here or in the database, every route but /healthz needs 'Authorization: Bearer <key>'.",
    )
    api_key_pepper: SecretStr | None = Field(
        default=None,
        description="Base64 32-byte key under which API keys are hashed in the database; "
        "unset: <data_dir>/keys/api-key-pepper.",
    )
    rate_limit: str | None = Field(
        default=None,
        description="Submissions per tenant, e.g. '60/minute' (also second, hour, day); unset: no limit. "
        "Counted in Redis when the queue is Redis, else in each API process.",
    )
    auth_failure_limit: str | None = Field(
        default="60/minute",
        description="Requests without a valid key per client address (then 429); unset: no limit.",
    )
    max_active_jobs_per_tenant: int | None = Field(
        default=None, ge=1, description="Jobs a tenant may have unfinished at once; unset: no cap."
    )
    max_cost_per_day: float | None = Field(
        default=None,
        ge=0,
        description="Estimated QPU cost (USD) a tenant may submit in any 24 hours; unset: no cap.",
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Time a connection has to send a request's headers."
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Time a request has to send its whole body."
    )
    keep_alive_seconds: int = Field(default=5, ge=1, description="Idle time before a connection is closed.")
    max_connections: int = Field(
        default=1000, ge=1, description="Connections (and requests in progress) per API process; then 503."
    )
    prepare_seconds: float = Field(
        default=240.0,
        gt=0,
        description="Time budget of PREPARING (estimate to compile); past it the job falls back "
        "classically. Keep it below lease_seconds.",
    )
    max_assets: int = Field(
        default=500,
        ge=2,
        le=5000,
        description="Assets per job; selections with more qubits than QHYBRID_MAX_QUBITS (or the device) "
        "are decomposed into sub-problems.",
    )
    max_qubits: int = Field(default=24, ge=2, le=40, description="Binary variables (qubits) per job.")
    max_price_rows: int = Field(default=20_000, ge=3, description="Rows of a price history.")
    max_shots: int = Field(default=100_000, ge=1)
    max_body_bytes: int = Field(
        default=16_000_000,
        ge=1024,
        description="Request body limit: 500 assets' price rows for about three years "
        "(500 × 756 numbers of up to 20 characters), or a 500 × 500 covariance.",
    )
    default_shots: int = Field(default=2048, ge=1)
    default_reps: int | None = Field(
        default=None, ge=1, le=8, description="QAOA layers when a request sets none; unset: by size."
    )

    subproblem_qubits: int = Field(
        default=16,
        ge=2,
        le=40,
        description="Qubits (decoys included) of each sub-problem of a decomposed job; the device's size "
        "caps it.",
    )
    decomposition_parts: int = Field(default=4, ge=1, le=64, description="Sub-problems sent per round.")
    decomposition_rounds: int = Field(
        default=4, ge=1, le=100, description="Rounds of a decomposed job at most."
    )
    decomposition_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Time budget of a decomposed job's rounds: no new round starts that would, at the "
        "rounds' average pace, end later than this after the classical start.",
    )
    decomposition_start_seconds: float = Field(
        default=2.0, gt=0, description="Swap-move annealing time of a decomposed job's classical start."
    )
    decomposition_exact_seconds: float = Field(
        default=5.0, gt=0, description="SCIP's time limit for the baseline of a decomposed job."
    )

    lease_seconds: float = Field(default=300.0, gt=0, description="How long a worker owns a job step.")
    poll_initial_seconds: float = Field(default=1.0, gt=0)
    poll_max_seconds: float = Field(default=60.0, gt=0)
    retry_initial_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=60.0, gt=0)
    max_step_retries: int = Field(default=5, ge=0, description="Transient failures tolerated per step.")
    max_remote_attempts: int = Field(default=3, ge=1, description="Provider tasks tried per job.")
    job_deadline_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)
    reconcile_interval_seconds: float = Field(default=10.0, gt=0)
    reconcile_grace_seconds: float = Field(default=30.0, ge=0)
    worker_threads: int = Field(default=2, ge=1)
    worker_shutdown_seconds: float = Field(
        default=10.0,
        ge=0,
        description="On SIGTERM, how long a worker lets its running steps finish before it releases "
        "their jobs to another worker (SIGINT releases them at once).",
    )
    backend_timeout_seconds: float = Field(default=30.0, gt=0)
    events_poll_seconds: float = Field(
        default=0.5, gt=0, le=10, description="How often GET /jobs/{id}/events looks for new transitions."
    )
    events_heartbeat_seconds: float = Field(
        default=15.0, gt=0, description="A comment line on a quiet event stream, so proxies keep it open."
    )
    metrics_tenant: str = Field(
        default="operations",
        min_length=1,
        description="Once API keys exist, only this tenant's keys read GET /metrics "
        "(the whole deployment's counts).",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of a worker's own Prometheus /metrics; unset: none (see docs/operations.md).",
    )
    exact_time_limit_seconds: float = Field(
        default=30.0, gt=0, description="Time limit of the exact classical baseline (SCIP) per job."
    )

    @field_validator("api_keys")
    @classmethod
    def _tenant_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        # Checked here so that a malformed pair stops the process at start, naming the variable.
        for entry in keys:
            tenant, key = split_api_key(entry.get_secret_value())
            if not TENANT_NAME.match(tenant):
                raise ValueError(
                    f"api_keys: tenant name {tenant!r} is not allowed (letters, digits, '.', '_', '-')"
                )
            if not key:
                raise ValueError(f"api_keys: the key of tenant {tenant!r} is empty")
        return keys

    def tenant_api_keys(self) -> list[tuple[str, str]]:
        """``QHYBRID_API_KEYS`` as (tenant, key) pairs."""
        return [split_api_key(entry.get_secret_value()) for entry in self.api_keys]

    @field_validator("api_keys", "egress_allow", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        # Environment variables carry lists as comma-separated text, which reads better than JSON.
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("rate_limit", "auth_failure_limit")
    @classmethod
    def _rate(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None
        if parse_rate(value) is None:
            raise ValueError(
                f"{info.field_name}: expected '<count>/<second|minute|hour|day>' (e.g. '60/minute'), "
                f"got {value!r}"
            )
        return value.strip()

    @field_validator("queue_url")
    @classmethod
    def _known_queue_scheme(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in QUEUE_SCHEMES:
            raise ValueError(
                f"queue_url: the scheme must be one of {', '.join(sorted(QUEUE_SCHEMES))}, got {scheme!r}"
            )
        return value.strip()

    @model_validator(mode="after")
    def _dev_token_on_loopback_only(self) -> Settings:
        # The development token is public (it is in this file): sending it to a real host would
        # authenticate nothing, or worse, authenticate as whoever else uses it.
        if self.cloud_token.get_secret_value() == DEV_CLOUD_TOKEN and not is_loopback_url(self.cloud_url):
            raise ValueError(
                f"cloud_token: the default development token is accepted only for a cloud on loopback; "
                f"set QHYBRID_CLOUD_TOKEN for {self.cloud_url}"
            )
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """The fields as ``repr`` shows them: passwords inside URLs masked (secrets already are)."""
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name in _URL_FIELDS and isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_queue(self) -> Settings:
        # Two settings naming two queues would split producers from consumers without a word.
        if self.queue_url and self.redis_url:
            raise ValueError("set QHYBRID_QUEUE_URL or QHYBRID_REDIS_URL, not both")
        return self

    @property
    def queue_engine(self) -> Literal["sqlite", "redis", "sqs"]:
        """Which engine carries the kicks: ``sqs``, ``redis`` or the embedded ``sqlite``."""
        if self.queue_url:
            return "sqs" if self.queue_url.lower().startswith("sqs://") else "redis"
        return "redis" if self.redis_url else "sqlite"

    @property
    def resolved_redis_url(self) -> str | None:
        """The Redis URL of a RedisHuey queue, from ``queue_url`` or ``redis_url``."""
        if self.queue_engine != "redis":
            return None
        return self.queue_url or self.redis_url

    def cloud_pricing(self) -> Pricing | None:
        """The emulated cloud's price list, ``None`` when it is free (the default)."""
        if self.cloud_price_per_task == 0 and self.cloud_price_per_shot == 0:
            return None
        return Pricing(
            per_task=self.cloud_price_per_task,
            per_shot=self.cloud_price_per_shot,
            source="QHYBRID_CLOUD_PRICE_PER_TASK / QHYBRID_CLOUD_PRICE_PER_SHOT",
        )

    @property
    def resolved_database_url(self) -> str:
        """The database URL in use: the configured one, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'qhybrid.db').resolve()}"

    @property
    def audit_path(self) -> Path:
        """The egress audit log (hash-chained JSON lines)."""
        return self.data_dir / "audit" / "egress.log"

    @property
    def noise_key_path(self) -> Path:
        """Where the embedded default keeps the keyed-noise key (mode 0600)."""
        return self.data_dir / "proxy" / "noise-key"

    @property
    def token_key_path(self) -> Path:
        """Where the embedded default keeps the gateway's client-token key (mode 0600)."""
        return self.data_dir / "gateway" / "token-key"

    @property
    def api_key_pepper_path(self) -> Path:
        """Where the embedded default keeps the API-key pepper (mode 0600)."""
        return self.data_dir / "keys" / "api-key-pepper"

    @property
    def kek_path(self) -> Path:
        """Where the embedded default keeps its key-encryption key (mode 0600)."""
        return self.data_dir / "keys" / "kek"

    @property
    def queue_path(self) -> Path:
        """Where the embedded SqliteHuey queue lives."""
        return self.data_dir / "queue.db"

    def ensure_dirs(self) -> None:
        """Create the data directory for the embedded default, ``0700`` (tightened if it exists)."""
        private_dir(self.data_dir)


#: ``QHYBRID_*`` variables that are not settings fields: read by the command line, the client and
#: the logging set-up (``qhybrid.client`` and ``qhybrid.core.logging`` name them too).
OTHER_VARIABLES: dict[str, str] = {
    "QHYBRID_API_URL": "where `qhybrid submit`, `qhybrid jobs` and the Python client find the API",
    "QHYBRID_API_KEY": "the API key they send, when the API requires one",
    "QHYBRID_LOG_LEVEL": "log level",
    "QHYBRID_LOG_FORMAT": "text or json",
}

#: Variables of the test suite, never read by qhybrid itself.
_TEST_PREFIX = "QHYBRID_TEST_"


def known_variables() -> set[str]:
    """Every ``QHYBRID_*`` variable qhybrid reads: one per settings field, and the others."""
    prefix = str(Settings.model_config.get("env_prefix", "QHYBRID_"))
    return {f"{prefix}{name}".upper() for name in Settings.model_fields} | set(OTHER_VARIABLES)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per set ``QHYBRID_*`` variable that qhybrid does not read (a typo, usually).

    Each names the closest known variable when there is one, e.g. ``QHYBRID_DATABSE_URL is not a
    qhybrid setting and is ignored; did you mean QHYBRID_DATABASE_URL?``.
    """
    environ = os.environ if environ is None else environ
    known = known_variables()
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("QHYBRID_") or upper in known or upper.startswith(_TEST_PREFIX):
            continue
        close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"{name} is not a qhybrid setting and is ignored{hint}")
    return warnings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
