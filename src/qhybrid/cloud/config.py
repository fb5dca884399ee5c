"""Settings of the emulated cloud, read from ``QCLOUD_*`` environment variables.

Command-line flags (see :mod:`qhybrid.cloud.main`) override the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from qhybrid.cloud.faults import FaultRule

#: The token used when none is configured; fine on loopback, announced with a warning at start.
DEFAULT_TOKEN = "local-dev-token"  # noqa: S105 - a well-known development default, not a secret

#: Key-exchange groups offered by default: the post-quantum hybrid first, classical X25519 for
#: clients whose TLS library has no ML-KEM.
DEFAULT_TLS_GROUPS = "X25519MLKEM768:X25519"

TlsVersion = Literal["1.2", "1.3"]

#: The only device name the instant sampler may run under, so that its answers can never pass for
#: a simulation: a throughput-testing device, never the default.
INSTANT_DEVICE = "emulated-instant"


class CloudConfig(BaseSettings):
    """Configuration of the emulated cloud (environment prefix ``QCLOUD_``).

    Fault rules are a JSON list, e.g. ``QCLOUD_FAULTS='[{"match": "POST /v1/tasks", "fault": "429"}]'``
    (see :class:`~qhybrid.cloud.faults.FaultRule`).
    """

    model_config = SettingsConfigDict(env_prefix="QCLOUD_", env_nested_delimiter="__", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8780, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    data_dir: Path = Field(default=Path(".qhybrid-cloud"), description="SQLite store and received.log.")
    token: SecretStr = Field(default=SecretStr(DEFAULT_TOKEN), description="Bearer token clients must send.")
    queue_delay_seconds: float = Field(default=2.0, ge=0, description="Minimum time a task stays QUEUED.")
    run_delay_seconds: float = Field(default=1.0, ge=0, description="Minimum time a task stays RUNNING.")
    device_name: str = Field(default="emulator", min_length=1, description="The one device offered.")
    num_qubits: int = Field(default=32, ge=1, description="Qubits of the device.")
    basis_gates: tuple[str, ...] = Field(
        default=("rz", "sx", "x", "cx"), description="Native gates advertised to transpilers."
    )
    max_shots: int = Field(default=100_000, ge=1, description="Largest shot count accepted.")
    max_program_bytes: int = Field(default=1_000_000, ge=1, description="Largest program (UTF-8) accepted.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="Logging level of the cloud and of uvicorn."
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="text lines, or one JSON object per line (the trusted zone's keys)."
    )
    tls: bool = Field(default=True, description="Serve HTTPS (pyOpenSSL front) rather than plain HTTP.")
    tls_groups: str = Field(
        default=DEFAULT_TLS_GROUPS, min_length=1, description="TLS key-exchange groups, ':'-separated."
    )
    tls_min_version: TlsVersion = Field(default="1.2", description="Lowest TLS version accepted.")
    tls_max_version: TlsVersion = Field(
        default="1.3", description="Highest TLS version offered (1.2 emulates a TLS-1.2-only provider)."
    )
    faults: tuple[FaultRule, ...] = Field(
        default=(), description="Fault rules armed at start (JSON list in QCLOUD_FAULTS)."
    )
    sampler: Literal["aer", "instant"] = Field(
        default="aer",
        description="How tasks are sampled: 'aer' simulates the circuit (always, unless asked); "
        f"'instant' is a throughput-testing device named {INSTANT_DEVICE!r} that simulates nothing "
        "and returns shots drawn uniformly at random over the measured bits.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lowercase_level(cls, value: object) -> object:
        # Accept INFO as well as info, the way people type it.
        return value.lower() if isinstance(value, str) else value

    @field_validator("tls_min_version", "tls_max_version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        # QCLOUD_TLS_MAX_VERSION=1.2 may arrive as a float from JSON-ish sources.
        return str(value) if isinstance(value, float) else value

    @model_validator(mode="after")
    def _check_tls_versions(self) -> CloudConfig:
        if float(self.tls_min_version) > float(self.tls_max_version):
            raise ValueError(
                f"tls_min_version {self.tls_min_version} is above tls_max_version {self.tls_max_version}"
            )
        return self

    @model_validator(mode="after")
    def _check_instant_device(self) -> CloudConfig:
        # Either name alone never selects the instant sampler, so no one mistakes its shots for a
        # simulation's: it runs only when both say so.
        if (self.sampler == "instant") != (self.device_name == INSTANT_DEVICE):
            raise ValueError(
                f"the instant sampler runs only as the device {INSTANT_DEVICE!r} and that device only "
                f"with it: got sampler {self.sampler!r} and device {self.device_name!r}"
            )
        return self

    @property
    def db_path(self) -> Path:
        """The SQLite file holding tasks and submission counters."""
        return self.data_dir / "cloud.db"

    @property
    def received_log_path(self) -> Path:
        """The append-only record of every request received."""
        return self.data_dir / "received.log"

    @property
    def tls_dir(self) -> Path:
        """Where the self-signed certificate and its key are kept between runs."""
        return self.data_dir / "tls"

    @property
    def tls_log_path(self) -> Path:
        """One JSON line per TLS handshake (version, group, cipher) lands here."""
        return self.data_dir / "tls.log"

    @property
    def lock_path(self) -> Path:
        """The file a running cloud holds locked, so that a second one cannot use the same data dir."""
        return self.data_dir / "cloud.lock"

    @property
    def internal_socket_path(self) -> Path:
        """The unix socket the HTTP app listens on behind the TLS front."""
        return self.data_dir / "app.sock"

    @property
    def uses_default_token(self) -> bool:
        """True when the well-known development token is in use."""
        return self.token.get_secret_value() == DEFAULT_TOKEN
