"""Cloud settings: environment, command-line precedence, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from qhybrid.cloud.config import DEFAULT_TOKEN, CloudConfig
from qhybrid.cloud.main import config_from_args


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QCLOUD_PORT", "QCLOUD_TOKEN", "QCLOUD_DATA_DIR", "QCLOUD_QUEUE_DELAY_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    config = CloudConfig()
    assert (config.host, config.port, config.device_name, config.num_qubits) == (
        "127.0.0.1",
        8780,
        "emulator",
        32,
    )
    assert config.basis_gates == ("rz", "sx", "x", "cx")
    assert config.token.get_secret_value() == DEFAULT_TOKEN
    assert config.uses_default_token
    assert config.faults.model_dump() == {}
    assert DEFAULT_TOKEN not in repr(config)  # the token stays out of logs


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QCLOUD_PORT", "9999")
    monkeypatch.setenv("QCLOUD_TOKEN", "from-env")
    monkeypatch.setenv("QCLOUD_RUN_DELAY_SECONDS", "7")
    config = config_from_args(
        ["--port", "8781", "--data-dir", str(tmp_path), "--queue-delay", "0.5", "--log-level", "DEBUG"]
    )
    assert config.port == 8781
    assert config.data_dir == tmp_path
    assert config.queue_delay_seconds == 0.5
    assert config.run_delay_seconds == 7.0  # from the environment, no flag given
    assert config.token.get_secret_value() == "from-env"
    assert not config.uses_default_token
    assert config.log_level == "debug"
