"""Command line and server loop of the emulated cloud: ``python -m qhybrid.cloud``."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from qhybrid.cloud.app import create_app
from qhybrid.cloud.config import CloudConfig

logger = logging.getLogger("qhybrid.cloud")


class _CloudServer(uvicorn.Server):
    """A uvicorn server that logs one line once it really listens (after the lifespan started)."""

    def __init__(self, uv_config: uvicorn.Config, cloud: CloudConfig) -> None:
        super().__init__(uv_config)
        self._cloud = cloud

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does, then announce readiness."""
        await super().startup(sockets=sockets)
        if self.should_exit:
            return
        port = self._cloud.port
        for server in getattr(self, "servers", []):
            for sock in server.sockets or ():
                port = sock.getsockname()[1]  # the real port when 0 was asked for
        logger.info(
            "qhybrid cloud ready on http://%s:%s (device %s, %d qubits, data dir %s)",
            self._cloud.host,
            port,
            self._cloud.device_name,
            self._cloud.num_qubits,
            self._cloud.data_dir.resolve(),
        )


def _ignore_signal(signum: int, _frame: FrameType | None) -> None:
    # uvicorn re-raises the signal that stopped it once it has shut down; catching it here turns
    # a completed graceful shutdown into exit status 0 instead of death by signal.
    logger.info("stopped by %s", signal.Signals(signum).name)


def serve(config: CloudConfig) -> None:
    """Run the cloud in this process until SIGTERM or SIGINT, then shut down cleanly.

    Args:
        config: The cloud configuration.
    """
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uv_config = uvicorn.Config(
        create_app(config),
        host=config.host,
        port=config.port,
        lifespan="on",  # a failing startup (e.g. unwritable data dir) must stop the process
        log_level=config.log_level,
        workers=1,
    )
    previous = {sig: signal.signal(sig, _ignore_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _CloudServer(uv_config, config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser; every flag overrides the matching ``QCLOUD_*`` variable."""
    parser = argparse.ArgumentParser(
        prog="python -m qhybrid.cloud",
        description="Emulated public quantum cloud (Braket-like task API over a Qiskit Aer simulator).",
    )
    parser.add_argument("--host", help="interface to listen on (QCLOUD_HOST)")
    parser.add_argument("--port", type=int, help="TCP port, 0 for any free one (QCLOUD_PORT)")
    parser.add_argument("--data-dir", type=Path, help="state directory (QCLOUD_DATA_DIR)")
    parser.add_argument("--token", help="bearer token clients must send (QCLOUD_TOKEN)")
    parser.add_argument(
        "--queue-delay", type=float, help="minimum seconds QUEUED (QCLOUD_QUEUE_DELAY_SECONDS)"
    )
    parser.add_argument("--run-delay", type=float, help="minimum seconds RUNNING (QCLOUD_RUN_DELAY_SECONDS)")
    parser.add_argument("--device", help="device name (QCLOUD_DEVICE_NAME)")
    parser.add_argument("--num-qubits", type=int, help="device qubits (QCLOUD_NUM_QUBITS)")
    parser.add_argument("--max-shots", type=int, help="largest shot count (QCLOUD_MAX_SHOTS)")
    parser.add_argument("--log-level", help="debug, info, warning... (QCLOUD_LOG_LEVEL)")
    return parser


_FLAG_TO_FIELD = {
    "host": "host",
    "port": "port",
    "data_dir": "data_dir",
    "token": "token",
    "queue_delay": "queue_delay_seconds",
    "run_delay": "run_delay_seconds",
    "device": "device_name",
    "num_qubits": "num_qubits",
    "max_shots": "max_shots",
    "log_level": "log_level",
}


def config_from_args(argv: Sequence[str] | None = None) -> CloudConfig:
    """Settings from the environment, overridden by the flags given in ``argv``."""
    args = vars(build_parser().parse_args(argv))
    overrides: dict[str, Any] = {
        field: args[flag] for flag, field in _FLAG_TO_FIELD.items() if args[flag] is not None
    }
    # Init arguments take precedence over the environment in pydantic-settings.
    return CloudConfig(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m qhybrid.cloud``.

    Returns:
        The process exit status.
    """
    serve(config_from_args(argv))
    return 0
