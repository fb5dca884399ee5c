"""The emulated cloud as a real process, for every test that needs one (trusted zone included)."""

from __future__ import annotations

import json
import secrets
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from qhybrid.gateway.egress import Destination, EgressClient
from qhybrid.gateway.payload import SubmissionPolicy
from qhybrid.gateway.routes import emulated_cloud_routes
from qhybrid.gateway.tokens import TokenMinter
from tests.support.processes import Process, free_port, start_process

TOKEN = "test-cloud-token-0123456789"

#: The token minter of the tests' egress clients: only tokens it minted pass their route tables.
TOKENS = TokenMinter(secrets.token_bytes(32))


def cloud_destination(
    base_url: str, *, token: str = TOKEN, device: str = "emulator", max_shots: int = 100_000
) -> Destination:
    """The emulated cloud as an egress destination: its route table, the tests' minter, its token."""
    policy = SubmissionPolicy(device=device, tokens=TOKENS, max_shots=max_shots)
    return Destination(base_url, emulated_cloud_routes(policy), authorization=f"Bearer {token}")


def egress_to(base_url: str, *, token: str = TOKEN, device: str = "emulator", **options: Any) -> EgressClient:
    """An egress client that may reach the emulated cloud at ``base_url`` (options as EgressClient's)."""
    return EgressClient([cloud_destination(base_url, token=token, device=device)], tokens=TOKENS, **options)


def tls_context(ca_file: Path) -> ssl.SSLContext:
    """A client TLS context that trusts exactly ``ca_file`` (the cloud's pinned certificate)."""
    return ssl.create_default_context(cafile=str(ca_file))


@dataclass
class CloudServer:
    """A running cloud process and how to reach it."""

    process: Process
    base_url: str
    port: int
    data_dir: Path
    token: str
    ca_file: Path | None = None

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What to pass as httpx's ``verify``: the pinned certificate when the cloud speaks TLS."""
        return True if self.ca_file is None else tls_context(self.ca_file)

    def client(self, token: str | None = None, *, timeout: float = 10.0) -> httpx.Client:
        """An HTTP client with the bearer token (``token`` overrides the server's)."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=timeout,
            trust_env=False,
            verify=self.verify,
        )

    def submissions(self) -> dict[str, int]:
        """POSTs to /v1/tasks the cloud received, per client token."""
        with self.client() as http:
            response = http.get("/v1/admin/submissions")
            response.raise_for_status()
            counts: dict[str, int] = response.json()
            return counts

    def stop(self) -> None:
        """Stop the process."""
        self.process.stop()

    def tls_log(self) -> list[dict[str, Any]]:
        """The handshake records of ``tls.log`` so far."""
        path = self.data_dir / "tls.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_healthy(process: Process, url: str, ca_file: Path | None, *, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers 200, trusting ``ca_file`` once the cloud has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode}:\n{process.log()[-4000:]}"
            )
        if ca_file is None or ca_file.exists():
            verify: ssl.SSLContext | bool = True if ca_file is None else tls_context(ca_file)
            try:
                if httpx.get(url, timeout=2.0, verify=verify, trust_env=False).status_code == 200:
                    return
            except (httpx.HTTPError, ssl.SSLError):
                pass
        time.sleep(0.1)
    process.stop()
    raise RuntimeError(f"{process.name} not healthy at {url} after {timeout}s:\n{process.log()[-4000:]}")


def start_cloud(
    work_dir: Path,
    *,
    name: str = "cloud",
    port: int | None = None,
    data_dir: Path | None = None,
    queue_delay: float = 0.3,
    run_delay: float = 0.5,
    token: str = TOKEN,
    tls: bool = True,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> CloudServer:
    """Start ``python -m qhybrid.cloud`` and wait until ``/healthz`` answers.

    With ``tls`` (the cloud's default) the server speaks HTTPS with its self-signed certificate,
    which the returned :class:`CloudServer` pins; ``tls=False`` passes ``--no-tls``.
    """
    port = port or free_port()
    data_dir = data_dir or work_dir / "data"
    args = [
        "-m", "qhybrid.cloud",
        "--port", str(port),
        "--data-dir", str(data_dir),
        "--queue-delay", str(queue_delay),
        "--run-delay", str(run_delay),
        "--token", token,
        *([] if tls else ["--no-tls"]),
        *extra_args,
    ]  # fmt: skip
    base_url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    ca_file = data_dir / "tls" / "cert.pem" if tls else None
    process = start_process(name, args, log_dir=work_dir / "logs", cwd=work_dir, env=env)
    wait_healthy(process, f"{base_url}/healthz", ca_file)
    return CloudServer(
        process=process, base_url=base_url, port=port, data_dir=data_dir, token=token, ca_file=ca_file
    )
