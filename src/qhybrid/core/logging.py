"""Process-wide logging: one line per record on stderr, never business data (callers log ids only)."""

from __future__ import annotations

import logging
import os


def configure_logging(level: str | None = None) -> None:
    """Send qhybrid's logs to stderr at ``level`` (default ``QHYBRID_LOG_LEVEL`` or INFO)."""
    chosen = (level or os.environ.get("QHYBRID_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=chosen,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        force=True,
    )
    # Huey logs every task execution at INFO; that is noise next to our own state-change lines.
    logging.getLogger("huey").setLevel(max(logging.WARNING, logging.getLevelName(chosen)))
