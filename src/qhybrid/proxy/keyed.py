"""Noise that stays put across a client's jobs, so that averaging many jobs does not wash it out.

Each job is obfuscated under a fresh key: a new permutation, gauge, scale, and (before this
module) new noise. A desk that rebalances daily sends the same universe every day, and a cloud
that lines the jobs up (matching qubits across jobs by their coefficients) and averages them sees
the noise shrink as ``σ/√k``: ``benchmarks/leakage_jobs.py`` measures what that gives away.

So most of the noise is *keyed*: a deterministic standard normal per field, per coupling and per
warm-start value, derived with HMAC-SHA256 from a deployment secret (:class:`NoiseKey`) and the
*identities* of the variables involved (asset names, lot bits), never from their position in a
request. The same pair of assets gets the same draw in every job of the client, in any order and
in any universe that holds both, so averaging k jobs leaves the keyed part whole. A smaller part
of the noise stays fresh per job: on a rolling window the true problem moves a little each day,
and with noise that were all keyed the day-to-day differences would show that movement without
any noise at all; the fresh part buries them (``docs/security.md``). The decoys' templates are
chosen from the universe, too, so that the same twins come back and none stands out as the one
qubit that changes between jobs.

The secret is ``QHYBRID_PRIVACY_NOISE_KEY`` (base64 of 32 bytes; the same on every host) or, in
the embedded default, ``<data_dir>/proxy/noise-key`` (0600, created on first use).
:meth:`NoiseKey.for_tenant` derives one key per tenant once jobs carry one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qhybrid.core.keyfile import load_key
from qhybrid.domain.qubo import FloatArray

_SCALE = float(1 << 64)


class NoiseKey:
    """The secret that keyed noise is derived from.

    Args:
        secret: 32 secret bytes.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = bytes(secret)

    def __repr__(self) -> str:
        return "NoiseKey(<secret>)"

    def for_tenant(self, tenant: str) -> NoiseKey:
        """A key of the tenant's own, so that two tenants' noise is independent."""
        return NoiseKey(hmac.new(self._secret, b"tenant\x00" + tenant.encode(), hashlib.sha256).digest())

    def _digest(self, domain: str, item: str) -> bytes:
        return hmac.new(self._secret, f"{domain}\x00{item}".encode(), hashlib.sha256).digest()

    def normals(self, domain: str, items: Sequence[str]) -> FloatArray:
        """One standard normal per item, the same for the same (key, domain, item) every time.

        Box-Muller on two 64-bit uniforms of the item's HMAC.
        """
        out = np.empty(len(items), dtype=np.float64)
        for index, item in enumerate(items):
            digest = self._digest(domain, item)
            u1 = (int.from_bytes(digest[:8], "big") + 0.5) / _SCALE
            u2 = (int.from_bytes(digest[8:16], "big") + 0.5) / _SCALE
            out[index] = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
        return out

    def field_normals(self, labels: Sequence[str]) -> FloatArray:
        """Per variable."""
        return self.normals("field", labels)

    def warm_normals(self, labels: Sequence[str]) -> FloatArray:
        """Per variable, for its warm-start value."""
        return self.normals("warm", labels)

    def coupling_normals(self, labels: Sequence[str]) -> FloatArray:
        """Per pair, as an upper-triangular ``(n, n)`` matrix; symmetric in the two labels."""
        n = len(labels)
        rows, cols = np.triu_indices(n, k=1)
        items = [
            json.dumps(sorted((labels[int(i)], labels[int(j)]))) for i, j in zip(rows, cols, strict=True)
        ]
        out = np.zeros((n, n), dtype=np.float64)
        out[rows, cols] = self.normals("coupling", items)
        return out

    def universe_rng(self, labels: Sequence[str]) -> np.random.Generator:
        """A generator seeded by the set of labels (not their order): the same universe, the same draws."""
        digest = self._digest("universe", json.dumps(sorted(labels)))
        return np.random.default_rng(int.from_bytes(digest, "big"))


def load_noise_key(value: str | None, path: Path) -> NoiseKey:
    """The deployment's noise key: ``QHYBRID_PRIVACY_NOISE_KEY`` (base64) or the key file.

    Raises:
        KeyFileError: On a malformed value, or a key file of the wrong size or readable by others.
    """
    return NoiseKey(load_key(value, path, setting="QHYBRID_PRIVACY_NOISE_KEY"))
