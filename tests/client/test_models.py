"""The client's picture of the API's answers: same fields as the API's schemas, and a light import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qhybrid.api import schemas
from qhybrid.client import models


def test_the_client_reads_every_field_the_api_writes() -> None:
    # The job document's request is the one part each side types itself (JSON for the client).
    assert set(models.JobDocument.model_fields) == set(schemas.JobDocument.model_fields)


@pytest.mark.parametrize("name", ["JobEvent", "RemoteTaskInfo", "JobAccepted", "JobSummary", "JobPage"])
def test_every_other_answer_is_the_same_model_on_both_sides(name: str) -> None:
    assert getattr(models, name) is getattr(schemas, name)


def test_the_client_package_loads_neither_numpy_nor_any_server_code() -> None:
    code = (
        "import sys\n"
        "sys.modules['numpy'] = None  # any import of numpy now fails\n"
        "import qhybrid.client\n"
        "loaded = sorted({m for m in sys.modules if m.startswith('qhybrid.')})\n"
        "print(' '.join(loaded))\n"
        "print(' '.join(sorted(m for m in ('fastapi', 'typer', 'sqlalchemy', 'qiskit', 'scipy') "
        "if m in sys.modules)))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, heavy = [*output.stdout.splitlines(), ""][:2]
    packages = {name.split(".")[1] for name in loaded.split()}
    assert packages == {"client", "domain"}
    # Exactly the domain modules the light distribution ships (clients/python/pyproject.toml).
    domain = {name for name in loaded.split() if name.startswith("qhybrid.domain.")}
    assert domain == {
        "qhybrid.domain.jobs",
        "qhybrid.domain.privacy",
        "qhybrid.domain.result",
        "qhybrid.domain.states",
    }
    assert heavy == ""  # (httpx itself loads rich and click for its own CLI when they are installed)
