"""Measurement counts back into bit matrices."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray


def decode_counts(counts: Mapping[str, int], num_bits: int) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Turn ``{"0110": 12, ...}`` into a bit matrix and a count vector.

    The keys follow :class:`qhybrid.backends.base.TaskResult`: character ``i`` is classical bit
    ``i``, i.e. bit 0 comes FIRST (the reverse of Qiskit's printed order). Outcomes with a zero
    count are dropped. Rows come most frequent first, ties in key order, so the result does not
    depend on the mapping's iteration order.

    Args:
        counts: Outcome → number of shots.
        num_bits: Expected width of every outcome.

    Returns:
        ``(bitstrings, counts)``: unique outcomes as a ``(m, num_bits)`` ``uint8`` matrix and
        their counts as an ``(m,)`` ``int64`` vector.

    Raises:
        ValueError: Naming the offending key, for a key of the wrong width or with characters
            other than ``0`` and ``1``, or for a negative or non-integer count.
    """
    if num_bits < 0:
        raise ValueError(f"num_bits must be >= 0, got {num_bits}")
    kept: list[tuple[str, int]] = []
    for key, value in counts.items():
        if not isinstance(key, str) or len(key) != num_bits or key.strip("01"):
            raise ValueError(f"outcome {key!r} is not a string of {num_bits} characters 0/1")
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"outcome {key!r} has an invalid count {value!r}")
        if value > 0:
            kept.append((key, int(value)))
    kept.sort(key=lambda item: (-item[1], item[0]))
    values = np.array([value for _, value in kept], dtype=np.int64)
    if not kept:
        return np.zeros((0, num_bits), dtype=np.uint8), values
    # One bulk conversion: the keys are validated ASCII, so each byte minus ord("0") is the bit.
    text = "".join(key for key, _ in kept).encode("ascii")
    bits = (np.frombuffer(text, dtype=np.uint8) - ord("0")).reshape(len(kept), num_bits)
    return bits.astype(np.uint8), values
