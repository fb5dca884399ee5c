"""Cloud settings: environment, command-line precedence, defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qhybrid.cloud.config import DEFAULT_TOKEN, CloudConfig
from qhybrid.cloud.faults import FaultRule
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
    assert config.faults == ()
    assert config.tls is True
    assert (config.tls_groups, config.tls_min_version, config.tls_max_version) == (
        "X25519MLKEM768:X25519",
        "1.2",
        "1.3",
    )
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


def test_tls_and_fault_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QCLOUD_TLS_GROUPS", "X25519")
    rules = [
        {"match": "POST /v1/tasks", "fault": 429, "retry_after": 2},
        {"fault": "task_failed", "count": 3},
    ]
    config = config_from_args(
        ["--no-tls", "--tls-max-version", "1.2", "--tls-min-version", "1.2", "--faults", json.dumps(rules)]
    )
    assert config.tls is False
    assert config.tls_groups == "X25519"  # from the environment
    assert config.tls_max_version == "1.2"
    assert config.faults == (
        FaultRule(match="POST /v1/tasks", fault="429", retry_after=2.0),
        FaultRule(fault="task_failed", count=3),
    )
    assert config_from_args(["--tls"]).tls is True


def test_tls_and_faults_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QCLOUD_TLS", "false")
    monkeypatch.setenv("QCLOUD_FAULTS", '[{"match": "GET /v1/tasks/*", "fault": "slow", "seconds": 0.5}]')
    config = CloudConfig()
    assert config.tls is False
    assert config.faults == (FaultRule(match="GET /v1/tasks/*", fault="slow", seconds=0.5),)


@pytest.mark.parametrize(
    "argv",
    [
        ["--faults", "{not json"],
        ["--faults", '{"fault": "429"}'],  # a rule, not a list of rules
        ["--faults", '[{"fault": "teapot"}]'],
        ["--tls-min-version", "1.3", "--tls-max-version", "1.2"],
        ["--tls-max-version", "1.1"],
    ],
)
def test_bad_tls_or_fault_settings_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        config_from_args(argv)
    assert exited.value.code == 2
    assert "error" in capsys.readouterr().err


def test_the_instant_sampler_runs_only_as_the_device_named_for_it() -> None:
    assert CloudConfig().sampler == "aer"  # never by default
    instant = config_from_args(["--sampler", "instant", "--device", "emulated-instant"])
    assert (instant.sampler, instant.device_name) == ("instant", "emulated-instant")
    # Neither name alone: uniform shots must never pass for a simulation of the circuit.
    for argv in (["--sampler", "instant"], ["--device", "emulated-instant"]):
        with pytest.raises(SystemExit):
            config_from_args(argv)
