"""A loopback HTTPS server standing in for IBM's endpoints, for the REAL qiskit-ibm-runtime SDK.

It answers the few requests the SDK makes for sign-in (IAM), instance discovery (Global Search and
Global Catalog), the device (its configuration and properties, from the SDK's own FakeTorino
files), job submission, search by tag, status and cancellation, and records every request it
receives, so a test can compare what reached "IBM" with the gateway's audit log.

It is a named stand-in: nothing of IBM's can run here (no account, no network). The SDK is pointed
at it with its own configuration: ``url`` and ``url_resolver`` of ``QiskitRuntimeService``, and the
``IAM_URL``, ``GLOBAL_SEARCH_URL`` and ``GLOBAL_CATALOG_URL`` environment variables that IBM's
cloud SDK reads; ``REQUESTS_CA_BUNDLE`` makes requests trust its self-signed certificate.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from qhybrid.cloud.tls import ensure_certificate

#: The instance the tests use (a well-formed CRN in us-east).
CRN = (
    "crn:v1:bluemix:public:quantum-computing:us-east:a/0123456789abcdef:"
    "11111111-2222-3333-4444-555555555555::"
)
BACKEND = "ibm_torino"
API_KEY = "test-ibm-api-key-0123456789"


def _jwt() -> str:
    """An unsigned-looking JWT with ``iat``/``exp`` (the SDK decodes it without checking the signature)."""

    def part(document: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=")

    now = int(time.time())
    return b".".join(
        [part({"alg": "RS256", "typ": "JWT"}), part({"iat": now, "exp": now + 3600}), b"c2ln"]
    ).decode()


def _sampler_result(counts: dict[str, int]) -> Any:
    """A SamplerV2 result with one pub and register ``c``, as Qiskit Runtime encodes it."""
    from qiskit.primitives.containers import BitArray, DataBin, PrimitiveResult, SamplerPubResult
    from qiskit_ibm_runtime import RuntimeEncoder

    width = len(next(iter(counts)))
    bits = BitArray.from_counts(counts, num_bits=width)
    result = PrimitiveResult([SamplerPubResult(DataBin(c=bits, shape=()))], metadata={"version": 2})
    return json.loads(json.dumps(result, cls=RuntimeEncoder))


def _fake_torino_documents() -> tuple[dict[str, Any], dict[str, Any]]:
    """FakeTorino's configuration and properties, as the SDK ships them."""
    from qiskit_ibm_runtime.fake_provider import FakeTorino

    folder = Path(FakeTorino.dirname)
    configuration = json.loads((folder / FakeTorino.conf_filename).read_text())
    properties = json.loads((folder / FakeTorino.props_filename).read_text())
    configuration["backend_name"] = BACKEND
    properties["backend_name"] = BACKEND
    return configuration, properties


@dataclass
class Received:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class IbmStandin:
    """The running stand-in."""

    server: ThreadingHTTPServer
    base_url: str
    ca_file: Path
    received: list[Received] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests(self) -> list[Received]:
        """What it received so far."""
        with self.lock:
            return list(self.received)

    def complete(self, job_id: str, counts: dict[str, int]) -> None:
        """Finish a job with these counts (Qiskit's order: classical bit 0 last)."""
        with self.lock:
            job = self.jobs[job_id]
            job["state"] = {"status": "Completed"}
            job["status"] = "Completed"
            job["counts"] = counts


def _handler(standin: IbmStandin) -> type[BaseHTTPRequestHandler]:
    configuration, properties = _fake_torino_documents()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            with standin.lock:
                standin.received.append(
                    Received(self.command, parts.path, parse_qs(parts.query), dict(self.headers), body)
                )
            code, answer = self._route(self.command, parts.path, parse_qs(parts.query), body)
            self._send(code, answer)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle  # noqa: N815

        def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
            if (method, path) == ("POST", "/identity/token"):
                expires = int(time.time()) + 3600
                token = {"access_token": _jwt(), "refresh_token": "r", "token_type": "Bearer"}
                return 200, {**token, "expires_in": 3600, "expiration": expires}
            if (method, path) == ("POST", "/gs/v3/resources/search"):
                item = {"crn": CRN, "service_plan_unique_id": "plan-1", "name": "qhybrid", "tags": []}
                return 200, {"items": [{**item, "doc": {"extensions": {"backends": [BACKEND]}}}]}
            if method == "GET" and path.startswith("/gc/"):
                return 200, {
                    "overview_ui": {"en": {"display_name": "Pay-as-you-go"}},
                    "metadata": {"pricing": {"type": "paygo"}},
                }
            if (method, path) == ("GET", "/api/v1/backends"):
                return 200, {"devices": [{"name": BACKEND, "status": {"name": "online"}, "qubits": 133}]}
            if (method, path) == ("GET", f"/api/v1/backends/{BACKEND}/configuration"):
                return 200, configuration
            if (method, path) == ("GET", f"/api/v1/backends/{BACKEND}/properties"):
                return 200, properties
            if (method, path) == ("GET", f"/api/v1/backends/{BACKEND}/status"):
                return 200, {"state": True, "status": "active", "message": "", "length_queue": 0}
            if (method, path) == ("GET", "/api/v1/instances/usage"):
                return 200, {"usage_consumed_seconds": 0, "usage_limit_reached": False}
            if (method, path) == ("GET", "/api/v1/jobs"):
                tags = query.get("tags", [])
                with standin.lock:
                    found = [j for j in standin.jobs.values() if set(tags) <= set(j.get("tags", []))]
                return 200, {"jobs": found, "count": len(found), "limit": 1, "offset": 0}
            if (method, path) == ("POST", "/api/v1/jobs"):
                document = json.loads(body)
                job_id = f"d{uuid.uuid4().hex[:19]}"
                job = {
                    "id": job_id,
                    "backend": document.get("backend"),
                    "program": {"id": document.get("program_id")},
                    "tags": document.get("tags", []),
                    "state": {"status": "Queued"},
                    "status": "Queued",
                    "created": "2026-01-01T00:00:00Z",
                }
                with standin.lock:
                    standin.jobs[job_id] = job
                return 200, {"id": job_id, "backend": document.get("backend")}
            if path.startswith("/api/v1/jobs/"):
                job_id, _, action = path.removeprefix("/api/v1/jobs/").partition("/")
                with standin.lock:
                    known = standin.jobs.get(job_id)
                if known is None:
                    return 404, {"errors": [{"message": "job not found", "code": 1291}]}
                job = known
                if method == "GET" and not action:
                    return 200, {k: v for k, v in job.items() if k != "counts"}
                if method == "GET" and action == "results" and "counts" in job:
                    return 200, _sampler_result(job["counts"])
                if method == "GET" and action == "metrics":
                    return 200, {"usage": {"status": "completed", "qpu_charge_time_seconds": 2}}
                if method == "POST" and action == "cancel":
                    with standin.lock:
                        job["state"] = {"status": "Cancelled"}
                        job["status"] = "Cancelled"
                    return 204, None
            return 404, {"errors": [{"message": f"no route {method} {path}", "code": 404}]}

        def _send(self, code: int, answer: Any) -> None:
            payload = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    return Handler


def start_ibm_standin(directory: Path) -> Iterator[IbmStandin]:
    """Serve on ``https://localhost:<port>`` until the generator is closed."""
    files = ensure_certificate(directory / "tls")
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    standin = IbmStandin(
        server=server, base_url=f"https://localhost:{server.server_address[1]}", ca_file=files.cert
    )
    server.RequestHandlerClass = _handler(standin)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
