"""The `qhybrid` command: the demo (its --json output is the contract), the help, the audit check."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from qhybrid.cli.output import print_result
from qhybrid.client import JobDocument
from qhybrid.gateway.payload import validate_program

pytestmark = pytest.mark.integration


def test_demo_json_prints_the_completed_job_and_nothing_else(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "qhybrid", "demo", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    job = json.loads(completed.stdout)  # stdout is the job document and nothing else
    assert job["status"] == "completed"
    result = job["result"]
    assert isinstance(result["selected"], list) and all(isinstance(n, str) for n in result["selected"])
    assert isinstance(result["objective"], float)
    assert isinstance(result["classical"]["objective"], float)
    # The red zone by default: obfuscated at the standard level, over the post-quantum hybrid link.
    assert result["quantum"]["privacy"]["level"] == "standard"
    link = result["quantum"]["link"]
    assert (link["tls_version"], link["tls_group"]) == ("TLSv1.3", "X25519MLKEM768")
    assert link["post_quantum"] is True
    # With the demo's default delays the job is seen waiting in the provider's queue, then running.
    statuses = [e["status"] for e in job["events"]]
    assert statuses.index("remote_queued") < statuses.index("remote_running") < statuses.index("completed")
    # The demo's state stays in a run folder of its own, never in a deployment's .qhybrid/.
    (run,) = (tmp_path / ".qhybrid-demo").iterdir()
    assert (run / "data" / "qhybrid.db").exists()
    assert (run / "cloud" / "cloud.db").exists()
    assert not (tmp_path / ".qhybrid").exists() and not (tmp_path / ".qhybrid-cloud").exists()
    # What `make demo` prints for the same document: the table and the QPU's facts.
    console = Console(record=True, width=200)
    print_result(console, JobDocument.from_json(job))
    text = console.export_text()
    assert "returned" in text and "classical (brute_force)" in text
    assert f"QPU: backend {result['quantum']['backend']}" in text
    assert "X25519MLKEM768 (hybrid post-quantum)" in text
    # Which step produced the answer, and what the circuit contributed beside classical samplers.
    assert "answer from: " in text and f"found by {result['found_by']}" in text
    contribution = result["quantum"]["contribution"]
    assert isinstance(contribution["circuit_helped"], bool)
    assert "what the circuit contributed" in text and "its start state (p = 0)" in text
    assert "conditioned rounding" in text and "swap annealing" in text
    assert ("circuit helped" if contribution["circuit_helped"] else "circuit did not help") in text
    assert "readout-error mitigation not applied: the device publishes no readout errors" in text
    # The programs as the cloud received them (byte for byte, received.log): every angle on the
    # gateway's grid, no literal longer than 7 significant digits, the bounded grammar whole.
    received = (run / "cloud" / "received.log").read_bytes().split(b"\n")
    programs = [json.loads(line)["program"] for line in received if line.startswith(b'{"device"')]
    assert len(programs) == 1
    literals = re.findall(r"\(([^)]*)\)", programs[0])
    assert len(literals) > 50  # the demo's circuit has hundreds of rotations (positive control)
    for literal in literals:
        digits = literal.lstrip("-").split("e")[0].replace(".", "").strip("0")
        assert len(digits) <= 7, literal
    facts = validate_program(programs[0])
    assert facts.measurements == facts.clbits == result["quantum"]["privacy"]["qubits_sent"]


def listed_commands(*args: str) -> set[str]:
    """The command names in the "Commands" panel of ``qhybrid *args --help``, read row by row.

    A row's first cell is a command name; a description that wraps continues on a row whose first
    cell is blank, so words of a description are never taken for commands.
    """
    page = help_text(*args)
    lines = page.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("╭─ Commands ")), None)
    names: set[str] = set()
    if start is None:  # a group without commands has no panel
        return names
    for line in lines[start + 1 :]:
        if line.startswith("╰"):
            return names
        cells = line.removeprefix("│ ")
        if not cells.startswith(" "):
            names.add(cells.split()[0])
    raise AssertionError(f"unterminated Commands panel in:\n{page}")


def test_help_lists_the_commands() -> None:
    listed = listed_commands()
    for command in ("serve", "worker", "cloud", "audit", "reconcile", "demo", "sample", "submit", "jobs"):
        assert command in listed, listed
    assert "verify" in listed_commands("audit"), "qhybrid audit verify is missing"
    assert listed_commands("jobs") == {"list", "show", "cancel", "result", "watch"}


@functools.cache
def help_text(*args: str) -> str:
    """``qhybrid *args --help`` as a real process prints it.

    Cached: the page of a command is the same each time it is asked for (a fixed installation, no
    terminal), and the tests below read the same pages several times (as a list of commands and as
    text); each ``python -m qhybrid`` costs a second or two of imports.
    """
    completed = subprocess.run(
        [sys.executable, "-m", "qhybrid", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return completed.stdout


def test_no_help_text_shows_markup_literally() -> None:
    groups = {(): listed_commands(), ("jobs",): listed_commands("jobs"), ("audit",): listed_commands("audit")}
    pages = [help_text(*group) for group in groups] + [
        help_text(*group, command) for group, commands in groups.items() for command in commands
    ]
    for page in pages:
        assert "``" not in page, page
        assert "[/" not in page, page  # no rich markup tag either
    assert "Exit codes: 0 ok; 1 the job failed" in help_text()


def test_version() -> None:
    from qhybrid import __version__

    completed = subprocess.run(
        [sys.executable, "-m", "qhybrid", "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert completed.stdout == f"qhybrid {__version__}\n"


def test_a_misspelled_variable_is_warned_about_at_start() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "qhybrid", "sample", "--tickers", "AAPL,MSFT"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "QHYBRID_DATABSE_URL": "sqlite://"},
    )
    assert completed.stderr.splitlines() == [
        "qhybrid: warning: QHYBRID_DATABSE_URL is not a qhybrid setting and is ignored; "
        "did you mean QHYBRID_DATABASE_URL?"
    ]
    assert json.loads(completed.stdout)["prices"]["assets"] == ["AAPL", "MSFT"]


def test_a_missing_database_is_one_line_and_exit_3(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "qhybrid", "worker"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **os.environ,
            "QHYBRID_DATA_DIR": str(tmp_path),
            "QHYBRID_DATABASE_URL": "postgresql+psycopg://postgres:secret@127.0.0.1:1/nowhere",
        },
    )
    assert completed.returncode == 3
    (line,) = completed.stderr.strip().splitlines()
    assert line.startswith(
        "qhybrid: cannot use the database at postgresql+psycopg://postgres:***@127.0.0.1:1/"
    )
    assert "secret" not in completed.stderr


def test_audit_verify_checks_the_deployment_log_and_an_anchor(tmp_path: Path) -> None:
    from qhybrid.gateway.audit import AuditLog

    log = AuditLog(tmp_path / "audit" / "egress.log")
    for i in range(3):
        log.append(destination="127.0.0.1:8780", method="POST", path="/v1/tasks", body=b"%d" % i)
    env = {**os.environ, "QHYBRID_DATA_DIR": str(tmp_path)}

    def verify(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "qhybrid", "audit", "verify", *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )

    intact = verify()
    assert intact.returncode == 0, intact.stderr
    assert "intact, 3 entries" in intact.stdout
    anchor = intact.stdout.split("last hash ")[1].split()[0]
    assert verify("--anchor", anchor).returncode == 0
    lines = log.path.read_bytes().splitlines(keepends=True)
    second = bytearray(lines[1])
    second[second.index(b"/v1/tasks") + 8] ^= 0x20  # one flipped bit in the second entry: "taskS"
    data = lines[0] + bytes(second) + lines[2]
    log.path.write_bytes(data)
    tampered = verify()
    assert tampered.returncode == 1
    assert f"{log.path}:2:" in tampered.stdout
    log.path.write_bytes(lines[0])
    assert verify().returncode == 0  # a shorter chain is valid by itself...
    assert verify("--anchor", anchor).returncode == 1  # ...but not against the anchor kept elsewhere
