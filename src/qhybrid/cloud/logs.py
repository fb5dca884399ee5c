"""The cloud's logging: the same line format as the trusted zone's API and workers.

The public zone imports nothing from the trusted zone, so this repeats the few lines of
``qhybrid.core.logging`` that set the format (text or JSON, with python-json-logger). The JSON
keys are the same, ``job_id``, ``tenant`` and ``state`` included and always ``null``: the cloud
never learns which job a task belongs to, which is the point of the boundary. One parser reads
the three processes' logs.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: Libraries whose INFO lines are noise (qiskit's transpiler and Aer log every pass).
QUIET_LOGGERS = ("qiskit", "qiskit_aer", "qiskit_qasm3_import", "stevedore", "asyncio", "multipart")


class _NoJob(logging.Filter):
    """Gives every record the trusted zone's job keys, empty."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add ``job_id``, ``tenant`` and ``state`` as ``None``; never drops a record."""
        for name in ("job_id", "tenant", "state"):
            if not hasattr(record, name):
                setattr(record, name, None)
        return True


def logging_config(level: str, fmt: LogFormat) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dictionary for the cloud process (uvicorn takes it too)."""
    chosen = level.upper()
    quiet = logging.getLevelName(max(logging.WARNING, logging.getLevelName(chosen)))
    formatter: dict[str, Any] = {"format": TEXT_FORMAT}
    if fmt == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["levelname", "name", "message", "job_id", "tenant", "state"],
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
            "reserved_attrs": [*RESERVED_ATTRS, "taskName", "color_message"],
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"no_job": {"()": _NoJob}},
        "formatters": {"cloud": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "cloud",
                "filters": ["no_job"],
            }
        },
        "root": {"level": chosen, "handlers": ["stderr"]},
        "loggers": {
            **{
                name: {"handlers": [], "propagate": True, "level": chosen}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
            **{name: {"level": quiet} for name in QUIET_LOGGERS},
        },
    }


def configure_logging(level: str, fmt: LogFormat) -> None:
    """Send the cloud's logs to stderr in the chosen format."""
    logging.config.dictConfig(logging_config(level, fmt))
    # Python warnings (deprecations at import...) become log lines too, in the same format.
    logging.captureWarnings(True)
