"""Only the gateway opens connections to the public zone: who may import a network library, and why.

A new module that imports an HTTP client, sockets, TLS or a provider SDK's network layer fails
this test until it is added below with its reason, so a second way out cannot slip in unreviewed.
The ``cloud`` package is the public zone itself and is not scanned.
"""

from __future__ import annotations

import ast
from pathlib import Path

import qhybrid

NETWORK = (
    "httpx",
    "httpcore",
    "requests",
    "urllib3",
    "urllib.request",
    "http.client",
    "socket",
    "ssl",
    "OpenSSL",
    "aiohttp",
    "boto3",
    "botocore",
    "braket.aws",
    "qiskit_ibm_runtime",
)

#: module (relative to ``src/qhybrid``) -> network imports it may make, with the reason.
ALLOWED: dict[str, set[str]] = {
    # The gateway: the one way out.
    "gateway/egress.py": {"httpx", "httpcore", "ssl"},
    "gateway/tls.py": {"httpcore", "socket", "ssl", "OpenSSL"},
    # The SDKs' policy: hooks on botocore (and Braket's session copies) and on requests' transport;
    # its self-test sends through both to a watched local socket, replays httpcore's trace events
    # and checks pyOpenSSL's binding; ssl labels the SDK links honestly.
    "gateway/sdk.py": {"ssl", "socket", "requests", "boto3", "botocore", "braket.aws", "httpcore", "OpenSSL"},
    # Provider adapters: the emulated cloud through EgressClient (httpx for its types and errors);
    # the SDKs open their own connections, hooked (botocore) or audited (IBM) by the gateway.
    "backends/emulated_cloud.py": {"httpx"},
    "backends/braket.py": {"botocore", "braket.aws"},
    "backends/ibm.py": {"requests", "qiskit_ibm_runtime"},
    # The fake backends' catalogue (class names and configuration files): no connection is opened.
    "backends/registry.py": {"qiskit_ibm_runtime"},
    # The host name in a worker id: no connection is opened.
    "jobs/journey.py": {"socket"},
    # The SQS queue engine: the bank's own queue in its own AWS account; the message is a random
    # job id (and, past 15 minutes of delay, a due time), never business data (docs/security.md).
    "jobs/queue/sqs_engine.py": {"boto3", "botocore"},
    # Trusted-zone clients of our own API and the demo's local processes (loopback only).
    "client/_protocol.py": {"httpx"},
    "client/sync.py": {"httpx"},
    "client/aio.py": {"httpx"},
    "demo.py": {"httpx", "socket", "ssl"},
}


def _network_imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            for library in NETWORK:
                if name == library or name.startswith(library + "."):
                    found.add(library)
    return found


def test_only_the_listed_modules_import_network_libraries() -> None:
    root = Path(qhybrid.__file__).parent
    actual: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith("cloud/"):
            continue
        imports = _network_imports(ast.parse(path.read_text(encoding="utf-8")))
        if imports:
            actual[relative] = imports
    assert actual == ALLOWED


def test_the_scanner_sees_every_import_form() -> None:
    source = (
        "import socket\nimport httpx as h\nfrom botocore.exceptions import ClientError\n"
        "def f():\n    import requests\n    from urllib.request import urlopen\n"
        "from urllib.parse import quote\nfrom . import socket_like\n"
    )
    expected = {"socket", "httpx", "botocore", "requests", "urllib.request"}
    assert _network_imports(ast.parse(source)) == expected
