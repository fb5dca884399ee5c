"""The contribution's helpers: distinct outcomes counted as numpy's unique would."""

from __future__ import annotations

import numpy as np
import pytest

from qhybrid.portfolio.formulation import unique_rows


@pytest.mark.parametrize("width", [1, 5, 8, 40, 62, 63, 70])
def test_distinct_outcomes_and_counts_are_numpys_in_its_order(width: int) -> None:
    rng = np.random.default_rng(width)
    bits = (rng.random((300, width)) < 0.3).astype(np.uint8)
    bits[:50] = bits[50:100]  # repeats
    bits[100, :] = 1  # the highest code, for packed widths
    unique, inverse, counts = unique_rows(bits)
    expected, expected_inverse, expected_counts = np.unique(
        bits, axis=0, return_inverse=True, return_counts=True
    )
    assert unique.dtype == np.uint8 and counts.dtype == np.int64
    assert np.array_equal(unique, expected) and np.array_equal(counts, expected_counts)
    assert np.array_equal(inverse, expected_inverse.reshape(-1)) and np.array_equal(unique[inverse], bits)
    assert int(counts.sum()) == 300
