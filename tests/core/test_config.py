"""The settings sit low in the layers: reading them loads no numerical or upper-layer code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from qhybrid.core.config import OTHER_VARIABLES, Settings, known_variables, unknown_variables


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


def test_a_misspelled_variable_is_named_with_the_closest_known_one() -> None:
    warnings = unknown_variables(
        {
            "QHYBRID_DATABSE_URL": "x",
            "QHYBRID_API_ULR": "x",
            "QHYBRID_SOMETHING_ELSE": "x",
            "QHYBRID_DATABASE_URL": "ok",
            "qhybrid_log_format": "json",  # pydantic-settings reads names in any case
            "QHYBRID_TEST_REDIS_URL": "the test suite's own",
            "PATH": "/bin",
        }
    )
    assert warnings == [
        "QHYBRID_API_ULR is not a qhybrid setting and is ignored; did you mean QHYBRID_API_URL?",
        "QHYBRID_DATABSE_URL is not a qhybrid setting and is ignored; did you mean QHYBRID_DATABASE_URL?",
        "QHYBRID_SOMETHING_ELSE is not a qhybrid setting and is ignored",
    ]


def test_the_variables_outside_the_settings_are_the_ones_their_readers_use() -> None:
    from qhybrid.client import _protocol
    from qhybrid.core import logging as qlogging

    readers = {
        _protocol.URL_VARIABLE,
        _protocol.KEY_VARIABLE,
        qlogging.LOG_LEVEL_VARIABLE,
        qlogging.LOG_FORMAT_VARIABLE,
    }
    assert readers == set(OTHER_VARIABLES)


def test_the_readme_configuration_table_lists_exactly_the_variables_qhybrid_reads() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `QHYBRID_")]
    documented: list[str] = []
    for row in rows:
        first_cell = row.split("|")[1]
        documented += re.findall(r"`(QHYBRID_[A-Z0-9_]+)`", first_cell)
    assert len(documented) == len(set(documented)), "a variable is listed twice"
    assert set(documented) == known_variables()
    assert {f"QHYBRID_{name.upper()}" for name in Settings.model_fields} <= set(documented)
