"""Command line and server loop of the emulated cloud: ``python -m qhybrid.cloud``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError

from qhybrid.cloud.app import create_app
from qhybrid.cloud.config import CloudConfig
from qhybrid.cloud.logs import configure_logging, logging_config
from qhybrid.cloud.tls import TlsFront, UpstreamAddress, build_server_context, ensure_certificate

logger = logging.getLogger("qhybrid.cloud")


#: uvicorn's exit status when it cannot start; used for the TLS front's own start failures too.
_STARTUP_FAILURE = 3

# Unix socket paths are limited to about 108 bytes; past this, the app listens on loopback instead.
_MAX_UNIX_SOCKET_PATH = 100


class _CloudServer(uvicorn.Server):
    """A uvicorn server that logs one line once it really listens (after the lifespan started).

    With TLS, it also starts the TLS front once the app is ready, and stops it first on shutdown,
    so that no client is accepted before the app can answer nor after it stopped answering.
    """

    def __init__(
        self,
        uv_config: uvicorn.Config,
        cloud: CloudConfig,
        front: TlsFront | None = None,
        cert_path: Path | None = None,
    ) -> None:
        super().__init__(uv_config)
        self._cloud = cloud
        self._front = front
        self._cert_path = cert_path

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does, then announce readiness."""
        await super().startup(sockets=sockets)
        if self.should_exit:
            return
        cloud = self._cloud
        if self._front is not None:
            self._front.start()
            logger.info(
                "qhybrid cloud ready on https://%s:%s (device %s, %d qubits, data dir %s; "
                "TLS %s-%s, groups %s, certificate %s)",
                cloud.host,
                self._front.port,
                cloud.device_name,
                cloud.num_qubits,
                cloud.data_dir.resolve(),
                cloud.tls_min_version,
                cloud.tls_max_version,
                cloud.tls_groups,
                self._cert_path,
            )
            return
        port = cloud.port
        for server in getattr(self, "servers", []):
            for sock in server.sockets or ():
                port = sock.getsockname()[1]  # the real port when 0 was asked for
        logger.info(
            "qhybrid cloud ready on http://%s:%s (device %s, %d qubits, data dir %s)",
            cloud.host,
            port,
            cloud.device_name,
            cloud.num_qubits,
            cloud.data_dir.resolve(),
        )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop the TLS front (off the event loop: it joins threads), then shut down as uvicorn does."""
        if self._front is not None:
            await asyncio.to_thread(self._front.stop)
        await super().shutdown(sockets=sockets)


def _ignore_signal(signum: int, _frame: FrameType | None) -> None:
    # uvicorn re-raises the signal that stopped it once it has shut down; catching it here turns
    # a completed graceful shutdown into exit status 0 instead of death by signal.
    logger.info("stopped by %s", signal.Signals(signum).name)


class DataDirInUseError(Exception):
    """Another live cloud holds the data directory."""


@contextlib.contextmanager
def data_dir_lock(config: CloudConfig) -> Iterator[None]:
    """Hold an exclusive lock on the data directory for as long as this cloud runs.

    Two clouds on one data directory would share its task store and its internal socket: the
    second one used to delete the first one's socket, leaving it up but deaf. The lock (``flock``
    on ``cloud.lock``) is released by the kernel when the process ends, however it ends, so a
    killed cloud never leaves a stale lock behind.

    Raises:
        DataDirInUseError: Another live process holds the lock (the message names its pid).
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with config.lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise DataDirInUseError(
                f"data dir {config.data_dir.resolve()} is in use by another qhybrid cloud (pid {holder}); "
                "stop it, or give this one another --data-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _internal_listener(config: CloudConfig) -> tuple[socket.socket, UpstreamAddress]:
    """The socket the app listens on behind the TLS front, and the address to reach it.

    A unix socket in the data directory, readable by this user only, keeps the plain-HTTP side
    out of reach of other local users; a loopback port is the fallback for long paths.
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    path = config.internal_socket_path.resolve()
    if hasattr(socket, "AF_UNIX") and len(os.fsencode(path)) <= _MAX_UNIX_SOCKET_PATH:
        path.unlink(missing_ok=True)  # left by a process that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous_umask = os.umask(0o177)  # the socket file is created 0600, with no window
        try:
            sock.bind(str(path))
        finally:
            os.umask(previous_umask)
        sock.listen(128)
        return sock, str(path)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock, ("127.0.0.1", int(sock.getsockname()[1]))


def serve(config: CloudConfig) -> None:
    """Run the cloud in this process until SIGTERM or SIGINT, then shut down cleanly.

    With ``config.tls`` (the default), HTTPS is served by a :class:`~qhybrid.cloud.tls.TlsFront`
    on ``host:port`` and the app listens on an internal endpoint; without, uvicorn serves plain
    HTTP on ``host:port`` itself.

    Args:
        config: The cloud configuration.
    """
    configure_logging(config.log_level, config.log_format)
    try:
        with data_dir_lock(config):
            _serve_locked(config)
    except DataDirInUseError as exc:
        logger.error("%s", exc)
        raise SystemExit(_STARTUP_FAILURE) from None


def _serve_locked(config: CloudConfig) -> None:
    log_config = logging_config(config.log_level, config.log_format)
    if not config.tls:
        uv_config = uvicorn.Config(
            create_app(config),
            host=config.host,
            port=config.port,
            lifespan="on",  # a failing startup (e.g. unwritable data dir) must stop the process
            log_level=config.log_level,
            log_config=log_config,
            workers=1,
        )
        _run(_CloudServer(uv_config, config))
        return

    try:
        cert = ensure_certificate(config.tls_dir)
        context = build_server_context(
            cert,
            groups=config.tls_groups,
            min_version=config.tls_min_version,
            max_version=config.tls_max_version,
        )
    except (OSError, ValueError) as exc:
        logger.error("cannot set up TLS: %s", exc)
        raise SystemExit(_STARTUP_FAILURE) from exc
    internal, upstream = _internal_listener(config)
    front = TlsFront(
        host=config.host,
        port=config.port,
        upstream=upstream,
        context=context,
        log_path=config.tls_log_path,
    )
    try:
        try:
            front.bind()  # now, so that a taken port stops the process before anything starts
        except OSError as exc:
            logger.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
            raise SystemExit(_STARTUP_FAILURE) from exc
        uv_config = uvicorn.Config(
            create_app(config),
            lifespan="on",
            log_level=config.log_level,
            log_config=log_config,
            workers=1,
            # The front is the proxy; uvicorn must not trust forwarded headers from clients.
            proxy_headers=False,
        )
        _run(_CloudServer(uv_config, config, front, cert.cert.resolve()), sockets=[internal])
    finally:
        front.stop()
        internal.close()
        if isinstance(upstream, str):
            with contextlib.suppress(OSError):
                Path(upstream).unlink()


def _run(server: _CloudServer, sockets: list[socket.socket] | None = None) -> None:
    previous = {sig: signal.signal(sig, _ignore_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=sockets)
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
    parser.add_argument(
        "--sampler",
        choices=("aer", "instant"),
        help="'aer' (default) simulates each circuit; 'instant', for throughput tests only and only "
        "with --device emulated-instant, simulates nothing and returns uniform random shots "
        "(QCLOUD_SAMPLER)",
    )
    parser.add_argument("--max-shots", type=int, help="largest shot count (QCLOUD_MAX_SHOTS)")
    parser.add_argument("--log-level", help="debug, info, warning... (QCLOUD_LOG_LEVEL)")
    parser.add_argument(
        "--log-format", choices=("text", "json"), help="log lines as text or JSON (QCLOUD_LOG_FORMAT)"
    )
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve HTTPS with a self-signed certificate under <data-dir>/tls (default), or plain "
        "HTTP with --no-tls (QCLOUD_TLS)",
    )
    parser.add_argument(
        "--tls-groups", help="key-exchange groups, e.g. X25519MLKEM768:X25519 (QCLOUD_TLS_GROUPS)"
    )
    parser.add_argument(
        "--tls-min-version", choices=("1.2", "1.3"), help="lowest TLS version (QCLOUD_TLS_MIN_VERSION)"
    )
    parser.add_argument(
        "--tls-max-version",
        choices=("1.2", "1.3"),
        help="highest TLS version; 1.2 emulates a TLS-1.2-only provider (QCLOUD_TLS_MAX_VERSION)",
    )
    parser.add_argument(
        "--faults",
        type=_json_list,
        help='fault rules as a JSON list, e.g. \'[{"match": "POST /v1/tasks", "fault": "429", '
        '"count": 2, "retry_after": 1}]\' (QCLOUD_FAULTS)',
    )
    return parser


def _json_list(text: str) -> list[Any]:
    """Parse a ``--faults`` value: a JSON list."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError("must be a JSON list of fault rules")
    return value


_FLAG_TO_FIELD = {
    "host": "host",
    "port": "port",
    "data_dir": "data_dir",
    "token": "token",
    "queue_delay": "queue_delay_seconds",
    "run_delay": "run_delay_seconds",
    "device": "device_name",
    "num_qubits": "num_qubits",
    "sampler": "sampler",
    "max_shots": "max_shots",
    "log_level": "log_level",
    "log_format": "log_format",
    "tls": "tls",
    "tls_groups": "tls_groups",
    "tls_min_version": "tls_min_version",
    "tls_max_version": "tls_max_version",
    "faults": "faults",
}


def config_from_args(argv: Sequence[str] | None = None) -> CloudConfig:
    """Settings from the environment, overridden by the flags given in ``argv``."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    overrides: dict[str, Any] = {
        field: args[flag] for flag, field in _FLAG_TO_FIELD.items() if args[flag] is not None
    }
    # Init arguments take precedence over the environment in pydantic-settings.
    try:
        return CloudConfig(**overrides)
    except ValidationError as exc:
        # A readable usage error (exit status 2) rather than a traceback, e.g. for a bad fault rule.
        parser.error(str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m qhybrid.cloud``.

    Returns:
        The process exit status.
    """
    serve(config_from_args(argv))
    return 0
