"""Process-wide logging: one line per record on stderr, in one format for the API and the workers.

``QHYBRID_LOG_FORMAT=text`` (default) writes ``time level logger: message``; ``json`` writes one
JSON object per line with ``time``, ``level``, ``logger``, ``message`` and, on every line, the
``job_id``, ``tenant`` and ``state`` the line is about (``null`` outside a job). The journey sets
them with :func:`log_context` around each job it advances, so the worker's lines and those of the
libraries it calls carry them without passing ids around. Callers log ids only, never business
data.

Third-party libraries log at WARNING and above only: at INFO, qiskit's transpiler alone wrote
four lines out of five of a worker's log.
"""

from __future__ import annotations

import logging
import logging.config
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS

LogFormat = Literal["text", "json"]

#: Environment variables read here (not by :class:`~qhybrid.core.config.Settings`: logging is
#: configured before the settings are read, and a bad setting must still be logged).
LOG_LEVEL_VARIABLE = "QHYBRID_LOG_LEVEL"
LOG_FORMAT_VARIABLE = "QHYBRID_LOG_FORMAT"

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: The keys of a JSON line, in order.
JSON_FIELDS = ("time", "level", "logger", "message", "job_id", "tenant", "state")

#: Libraries whose INFO lines are noise next to ours (qiskit's transpiler logs every pass).
QUIET_LOGGERS = (
    "qiskit",
    "qiskit_aer",
    "qiskit_ibm_runtime",
    "qiskit_braket_provider",
    "braket",
    "httpx",
    "httpcore",
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "requests",
    "stevedore",
    "huey",
    "alembic",
    "asyncio",
    "numba",
    "matplotlib",
    "multipart",
    "watchfiles",
)

_job_id: ContextVar[str | None] = ContextVar("qhybrid_log_job_id", default=None)
_tenant: ContextVar[str | None] = ContextVar("qhybrid_log_tenant", default=None)
_state: ContextVar[str | None] = ContextVar("qhybrid_log_state", default=None)


@contextmanager
def log_context(
    *, job_id: str | None = None, tenant: str | None = None, state: str | None = None
) -> Iterator[None]:
    """Every line logged inside (in this thread or task) names this job, tenant and state."""
    tokens = (_job_id.set(job_id), _tenant.set(tenant), _state.set(state))
    try:
        yield
    finally:
        _state.reset(tokens[2])
        _tenant.reset(tokens[1])
        _job_id.reset(tokens[0])


def set_log_state(state: str | None) -> None:
    """The job moved on: the following lines of this context name ``state``."""
    _state.set(state)


class ContextFilter(logging.Filter):
    """Adds ``job_id``, ``tenant`` and ``state`` from :func:`log_context` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Set the three attributes (a record's own ``extra`` wins); never drops a record."""
        for name, variable in (("job_id", _job_id), ("tenant", _tenant), ("state", _state)):
            if getattr(record, name, None) is None:
                setattr(record, name, variable.get())
        return True


def chosen_format(fmt: str | None = None) -> LogFormat:
    """``fmt``, else ``QHYBRID_LOG_FORMAT``, else ``text``.

    Raises:
        ValueError: For another value, naming the variable.
    """
    value = (fmt or os.environ.get(LOG_FORMAT_VARIABLE) or "text").strip().lower()
    if value not in ("text", "json"):
        raise ValueError(f"{LOG_FORMAT_VARIABLE} must be text or json, not {value!r}")
    return "json" if value == "json" else "text"


def chosen_level(level: str | None = None) -> str:
    """``level``, else ``QHYBRID_LOG_LEVEL``, else INFO (upper case)."""
    return (level or os.environ.get(LOG_LEVEL_VARIABLE) or "INFO").strip().upper()


def logging_config(level: str | None = None, fmt: str | None = None) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dictionary for this process (uvicorn takes it too).

    Args:
        level: Level of qhybrid's and uvicorn's loggers (default ``QHYBRID_LOG_LEVEL`` or INFO).
        fmt: ``text`` or ``json`` (default ``QHYBRID_LOG_FORMAT`` or text).
    """
    chosen = chosen_level(level)
    quiet = logging.getLevelName(max(logging.WARNING, logging.getLevelName(chosen)))
    formatter: dict[str, Any]
    if chosen_format(fmt) == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["levelname", "name", "message", "job_id", "tenant", "state"],
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
            # uvicorn passes its coloured copy of each message as an extra; one message is enough.
            "reserved_attrs": [*RESERVED_ATTRS, "taskName", "color_message"],
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"qhybrid": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "qhybrid",
                "filters": ["context"],
            }
        },
        "root": {"level": chosen, "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's own loggers keep their levels but write through our handler, in our format.
            **{
                name: {"handlers": [], "propagate": True, "level": chosen}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
            **{name: {"level": quiet} for name in QUIET_LOGGERS},
        },
    }


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Send this process's logs to stderr in the chosen format (see :func:`logging_config`)."""
    logging.config.dictConfig(logging_config(level, fmt))
    # Python warnings (deprecations at import...) become log lines too, in the same format.
    logging.captureWarnings(True)
