"""Log lines: JSON with the job's id, tenant and state on every line; third-party INFO turned down.

Each case runs in a fresh interpreter, so that configuring logging cannot leak into the test run.
The JSON lines of a real worker, API and cloud are checked in ``tests/integration/test_logs.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from qhybrid.core.logging import JSON_FIELDS, chosen_format

SCRIPT = """
import logging
from qhybrid.core.logging import configure_logging, log_context, set_log_state
configure_logging()
log = logging.getLogger("qhybrid.worker")
log.info("outside")
with log_context(job_id="job-1", state="preparing"):
    log.info("step")
    set_log_state("submitting")
    logging.getLogger("qiskit.passmanager.base_tasks").info("Pass: ElidePermutations - 0.01 ms")
    logging.getLogger("qiskit.transpiler").warning("a qiskit warning")
    logging.getLogger("httpx").info("HTTP Request: GET https://x 200")
    log.info("moved", extra={"tenant": "t-7"})
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("failed")
log.info("after")
import warnings
warnings.warn("old API", DeprecationWarning, stacklevel=1)
"""


def run(**env: str) -> list[str]:
    variables = {k: v for k, v in os.environ.items() if not k.startswith("QHYBRID_")}
    variables.update(env)
    variables["PYTHONWARNINGS"] = "always"
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=variables, check=True
    )
    return completed.stderr.splitlines()


def test_json_lines_carry_the_job_tenant_and_state_and_third_parties_are_quiet() -> None:
    lines = [json.loads(line) for line in run(QHYBRID_LOG_FORMAT="json")]  # every line is JSON
    assert all(set(JSON_FIELDS) <= set(line) for line in lines)
    by_message = {line["message"]: line for line in lines}
    assert {k: by_message["outside"][k] for k in ("job_id", "tenant", "state")} == {
        "job_id": None,
        "tenant": None,
        "state": None,
    }
    assert (by_message["step"]["job_id"], by_message["step"]["state"]) == ("job-1", "preparing")
    assert by_message["moved"]["state"] == "submitting"
    assert by_message["moved"]["tenant"] == "t-7"
    assert by_message["after"]["job_id"] is None  # the context ended with the job
    assert (
        by_message["failed"]["level"] == "ERROR" and "ZeroDivisionError" in by_message["failed"]["exc_info"]
    )
    # Third-party INFO is gone, their warnings stay (with the job they happened in).
    assert "Pass: ElidePermutations - 0.01 ms" not in by_message
    assert "HTTP Request: GET https://x 200" not in by_message
    assert by_message["a qiskit warning"]["job_id"] == "job-1"
    assert any(line["logger"] == "py.warnings" and "old API" in line["message"] for line in lines)
    assert {line["logger"] for line in lines} == {"qhybrid.worker", "qiskit.transpiler", "py.warnings"}


def test_text_is_the_default_and_has_one_layout() -> None:
    lines = run()
    assert lines[0].endswith("INFO    qhybrid.worker: outside")
    assert not any("ElidePermutations" in line for line in lines)


def test_an_unknown_format_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="QHYBRID_LOG_FORMAT must be text or json"):
        chosen_format("yaml")
