"""The settings sit low in the layers: reading them loads no numerical or upper-layer code."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from qhybrid.core.config import Settings


def test_importing_the_settings_loads_only_core_and_domain() -> None:
    code = (
        "import sys, qhybrid.core.config\n"
        "loaded = sorted({m.split('.')[1] for m in sys.modules if m.startswith('qhybrid.')})\n"
        "print(','.join(loaded), 'numpy' in sys.modules)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    packages, numpy_loaded = output.stdout.split()
    assert set(packages.split(",")) <= {"core", "domain"}
    assert numpy_loaded == "False"


def test_queue_url_picks_the_engine() -> None:
    assert Settings().queue_engine == "sqlite"
    assert Settings(redis_url="redis://h:6379/0").queue_engine == "redis"
    by_url = Settings(queue_url="redis://h:6379/0")
    assert (by_url.queue_engine, by_url.resolved_redis_url) == ("redis", "redis://h:6379/0")
    sqs = Settings(queue_url="sqs://jobs?region=eu-west-1")
    assert (sqs.queue_engine, sqs.resolved_redis_url) == ("sqs", None)


def test_queue_url_refuses_unknown_schemes_and_a_second_queue() -> None:
    with pytest.raises(ValidationError, match="scheme must be one of"):
        Settings(queue_url="amqp://broker/jobs")
    with pytest.raises(ValidationError, match="not both"):
        Settings(queue_url="sqs://jobs", redis_url="redis://h:6379/0")
