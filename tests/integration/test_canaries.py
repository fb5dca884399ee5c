"""Canaries: client names, tickers and amounts planted in real jobs must appear nowhere outside
the trusted zone's database — not in any byte the emulated cloud received or stored, not in its
logs, not in our own logs or audit log.

Runs on the embedded default only (the stack fixture's other setup adds nothing to what crosses
the boundary), with both input forms: moments and prices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qhybrid.client import Client
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

NAMES = [
    "ZETA-CANARY-7F3A",
    "Acme Canary Pension Fund",
    "CNRYQ",
    "Orca Canary Client 991",
    "KANAR1",
    "CANARYX",
]
# Amounts whose digit strings are unlikely anywhere by chance.
RETURNS = [
    0.0031415926535,
    0.0027182818284,
    0.0014142135623,
    0.0017320508075,
    0.0022360679774,
    0.0026457513110,
]
DIGITS = ["31415926535", "27182818284", "14142135623", "17320508075", "22360679774", "26457513110"]
PRICE_BASE = 4242.424242


def moments_request() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    factors = rng.normal(size=(6, 3)) * 0.01
    sigma = factors @ factors.T + np.diag(rng.uniform(1e-4, 3e-4, size=6))
    return {
        "assets": [{"name": n, "expected_return": r} for n, r in zip(NAMES, RETURNS, strict=True)],
        "covariance": sigma.tolist(),
        "risk_aversion": 1.0,
        "budget": 3,
        "shots": 1024,
        "options": {"seed": 11, "reps": 1},
    }


def prices_request() -> dict[str, Any]:
    rng = np.random.default_rng(8)
    walk = np.cumprod(1 + rng.normal(0.0005, 0.01, size=(120, 6)), axis=0)
    prices = np.round(PRICE_BASE * walk, 6)
    prices[0] = PRICE_BASE
    return {
        "prices": {
            "assets": NAMES,
            "values": prices.tolist(),
            "dates": [f"2024-01-{i % 28 + 1:02d}" for i in range(120)],
        },
        "risk_aversion": 2.0,
        "budget": 2,
        "shots": 1024,
        "options": {"seed": 12, "reps": 1},
    }


def needles() -> list[bytes]:
    out = (
        [n.encode() for n in NAMES]
        + [n.lower().encode() for n in NAMES]
        + [n.upper().encode() for n in NAMES]
    )
    out += [d.encode() for d in DIGITS] + [b"4242.424242", b"4242424242"]
    return sorted(set(out))


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
        elif root.is_dir():
            yield from (p for p in root.rglob("*") if p.is_file() and not p.is_socket())


@pytest.mark.parametrize("stack_env", ["embedded"], indirect=True)
def test_no_canary_leaves_the_trusted_zone(start_stack: Callable[..., Stack], tmp_path: Path) -> None:
    stack = start_stack()
    with Client(stack.api_url) as client:
        jobs = [
            client.submit(request).wait(timeout=120).raw for request in (moments_request(), prices_request())
        ]
    for job in jobs:
        assert job["status"] == "completed", stack.logs()
        assert job["result"]["source"] in ("quantum", "quantum+refinement")
        assert set(job["result"]["selected"]) <= set(NAMES)  # the names are there, inside
    received = stack.cloud.data_dir / "received.log"
    assert received.stat().st_size > 0
    assert b"POST /v1/tasks" in received.read_bytes()
    cloud_files = list(files_under(stack.cloud.data_dir, stack.cloud.process.log_path))
    data_dir = Path(stack.env["QHYBRID_DATA_DIR"])
    our_logs = [p.log_path for p in stack.processes] + list(
        files_under(data_dir / "audit", data_dir / "logs")
    )
    assert any(path.name == "egress.log" for path in our_logs)
    # Positive control: the scanner does find the canaries where they legitimately are, in the
    # trusted database (SQLite file and its write-ahead log).
    trusted = b"".join(p.read_bytes() for p in data_dir.glob("qhybrid.db*") if p.is_file())
    assert all(name.encode() in trusted for name in NAMES)
    assert DIGITS[0].encode() in trusted
    found: list[str] = []
    for path in [*cloud_files, *our_logs]:
        content = path.read_bytes()
        found += [f"{needle.decode()} in {path}" for needle in needles() if needle in content]
    assert found == []
