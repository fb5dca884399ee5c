"""The benchmarks' shared Markdown output."""

from __future__ import annotations

import os

from benchmarks.report import machine, markdown_header, markdown_row, markdown_table


def test_markdown_table_uses_the_first_rows_keys_in_order() -> None:
    rows = [{"n": 4, "ratio": "0.93"}, {"n": 20, "ratio": "0.90"}]
    assert markdown_table(rows) == ["| n | ratio |", "|---|---|", "| 4 | 0.93 |", "| 20 | 0.90 |"]
    assert markdown_header(["a"]) == ["| a |", "|---|"]
    assert markdown_row([1.5, "x"]) == "| 1.5 | x |"


def test_machine_names_the_cores_and_python() -> None:
    assert f": {os.cpu_count()} cores, Python " in machine()
