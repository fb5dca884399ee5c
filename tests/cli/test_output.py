"""What the client commands print, and the exit code table they document."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console

from qhybrid.cli.output import EXIT_CODES_HELP, ExitCode, TransitionPrinter
from qhybrid.client._protocol import Tracker
from tests.client.test_protocol import JOURNEY, document


def test_the_readme_documents_every_exit_code() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## The command line\n", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", section, flags=re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}
    assert {int(code) for code in re.findall(r"(\d+) [a-z]", EXIT_CODES_HELP)} == documented


def test_each_transition_is_printed_once_with_its_time_and_a_retry_never_reads_as_one() -> None:
    console = Console(record=True, width=200)
    printer = TransitionPrinter(console)
    tracker = Tracker()
    polls = [
        document(JOURNEY[:1]),
        document(JOURNEY[:3], last_error="TransientError: certificate verify failed"),
        document(JOURNEY[:3], last_error="TransientError: certificate verify failed"),
        document(JOURNEY[:6]),
    ]
    for poll in polls:
        update = tracker.update(poll)
        if update is not None:
            printer(update)
    lines = console.export_text().splitlines()
    assert lines == [
        "     0.0s  accepted",
        "     1.0s  preparing",
        "     2.0s  submitting",
        "     3.0s  (retrying: TransientError: certificate verify failed)",
        "     3.0s  submitted",
        "     4.0s  remote_queued",
        "     5.0s  remote_running",
    ]
