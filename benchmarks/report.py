"""How every benchmark prints: a machine line and Markdown tables, ready for ``docs/benchmarks.md``."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any


def machine() -> str:
    """``host: N cores, Python X.Y.Z``: the machine a table was measured on."""
    return f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}"


def markdown_header(headers: Sequence[str]) -> list[str]:
    """The header row and the separator of a Markdown table."""
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]


def markdown_row(cells: Sequence[Any]) -> str:
    """One row of a Markdown table."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A table of dict rows, the first row's keys as headers (every row has the same keys)."""
    headers = list(rows[0])
    return [*markdown_header(headers), *(markdown_row([row[h] for h in headers]) for row in rows)]
