"""Settings of the emulated cloud, read from ``QCLOUD_*`` environment variables.

Command-line flags (see :mod:`qhybrid.cloud.main`) override the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The token used when none is configured; fine on loopback, announced with a warning at start.
DEFAULT_TOKEN = "local-dev-token"  # noqa: S105 - a well-known development default, not a secret


class FaultConfig(BaseModel):
    """Faults the cloud injects into its answers (throttling, 5xx, dropped connections...).

    Empty for now: the section exists so that fault injection can be added without reshaping the
    configuration. Unknown keys are refused so that a typo does not silently disable a fault.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class CloudConfig(BaseSettings):
    """Configuration of the emulated cloud (environment prefix ``QCLOUD_``).

    Nested sections use ``__`` in environment variables, e.g. ``QCLOUD_FAULTS__<FIELD>``.
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
    faults: FaultConfig = Field(default_factory=FaultConfig, description="Fault injection (none yet).")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lowercase_level(cls, value: object) -> object:
        # Accept INFO as well as info, the way people type it.
        return value.lower() if isinstance(value, str) else value

    @property
    def db_path(self) -> Path:
        """The SQLite file holding tasks and submission counters."""
        return self.data_dir / "cloud.db"

    @property
    def received_log_path(self) -> Path:
        """The append-only record of every request received."""
        return self.data_dir / "received.log"

    @property
    def uses_default_token(self) -> bool:
        """True when the well-known development token is in use."""
        return self.token.get_secret_value() == DEFAULT_TOKEN
