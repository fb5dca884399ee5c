"""The client installs without the server: a fresh venv, `pip install ./clients/python`, a real job.

The venv gets the client and its two requirements (httpx, pydantic) from the package index, and
nothing else; the script in it submits a portfolio to a real stack and reads the typed result.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from qhybrid.demo import sample_request
from tests.conftest import IN_CI
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

#: What `pip install ./clients/python` may bring: the client, httpx and pydantic with their own
#: requirements, and the venv's installer.
ALLOWED = {
    "qhybrid-client", "httpx", "httpcore", "h11", "anyio", "idna", "certifi", "sniffio",
    "pydantic", "pydantic-core", "annotated-types", "typing-extensions", "typing-inspection",
    "exceptiongroup", "pip", "setuptools", "wheel",
}  # fmt: skip

SCRIPT = """
import importlib.util, json, sys
from qhybrid.client import Client, JobResult
request = json.load(open(sys.argv[2]))
with Client(sys.argv[1]) as client:
    job = client.submit(request)
    result = job.result(timeout=240)
    assert isinstance(result, JobResult)
    print(json.dumps({
        "selected": result.selected,
        "source": result.source,
        "events": [event.status.api_name for event in job.events()],
        "missing": [
            m for m in ("numpy", "qiskit", "fastapi", "sqlalchemy") if importlib.util.find_spec(m) is None
        ],
    }))
"""


def _start_install(venv: Path) -> subprocess.Popen[str]:
    """Create the venv and start ``pip install ./clients/python`` in it (the stack starts meanwhile)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    return subprocess.Popen(
        [str(venv / "bin" / "python"), "-m", "pip", "install", str(ROOT / "clients" / "python")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish_install(pip: subprocess.Popen[str]) -> None:
    try:
        stdout, stderr = pip.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        pip.kill()
        pip.communicate()
        pytest.fail("pip install ./clients/python did not finish in 900 s")
    if pip.returncode != 0:
        unreachable = ("No matching distribution", "Could not find a version", "Failed to establish")
        message = f"pip install ./clients/python failed:\n{stdout[-2000:]}\n{stderr[-3000:]}"
        if not IN_CI and any(text in stderr for text in unreachable):
            pytest.skip("the package index is unreachable: " + stderr.strip().splitlines()[-1])
        pytest.fail(message)


@pytest.mark.parametrize("stack_env", ["embedded"], indirect=True)
def test_the_light_client_installs_alone_and_reads_a_typed_result(
    start_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    pip = _start_install(venv)
    stack = start_stack()
    _finish_install(pip)
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {item["name"].lower().replace("_", "-") for item in json.loads(listed.stdout)}
    assert installed <= ALLOWED, installed - ALLOWED
    assert "qhybrid-client" in installed

    request = sample_request()
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(request))
    script = tmp_path / "use_client.py"
    script.write_text(SCRIPT)
    completed = subprocess.run(
        [str(venv / "bin" / "python"), str(script), stack.api_url, str(request_file)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,  # not the repository: the installed package is the one imported
    )
    assert completed.returncode == 0, completed.stderr + stack.logs()
    outcome = json.loads(completed.stdout)
    assert outcome["missing"] == ["numpy", "qiskit", "fastapi", "sqlalchemy"]
    assert len(outcome["selected"]) == request["budget"]
    assert set(outcome["selected"]) <= set(request["prices"]["assets"])
    assert outcome["source"] in ("quantum", "quantum+refinement")
    assert outcome["events"][0] == "accepted" and outcome["events"][-1] == "completed"
