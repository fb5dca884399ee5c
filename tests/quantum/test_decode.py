from __future__ import annotations

import numpy as np
import pytest

from qhybrid.quantum.decode import decode_counts


def test_bit_zero_comes_first() -> None:
    bits, counts = decode_counts({"100": 7, "011": 3}, 3)
    assert bits.dtype == np.uint8
    assert counts.dtype == np.int64
    assert bits.tolist() == [[1, 0, 0], [0, 1, 1]]
    assert counts.tolist() == [7, 3]


def test_order_is_by_count_then_key_and_zero_counts_are_dropped() -> None:
    bits, counts = decode_counts({"11": 2, "01": 5, "10": 2, "00": 0}, 2)
    assert bits.tolist() == [[0, 1], [1, 0], [1, 1]]
    assert counts.tolist() == [5, 2, 2]


def test_numpy_counts_and_empty_input() -> None:
    bits, counts = decode_counts({"1": np.int64(4)}, 1)  # type: ignore[dict-item]
    assert counts.tolist() == [4]
    bits, counts = decode_counts({}, 4)
    assert bits.shape == (0, 4)
    assert counts.shape == (0,)


@pytest.mark.parametrize("key", ["01", "0110", "01a", "0 1", "0x1", "٠١٠"])
def test_bad_keys_are_named(key: str) -> None:
    with pytest.raises(ValueError, match=repr(key)):
        decode_counts({"000": 1, key: 2}, 3)


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_bad_counts(value: object) -> None:
    with pytest.raises(ValueError, match="'010'"):
        decode_counts({"010": value}, 3)  # type: ignore[dict-item]


def test_negative_width() -> None:
    with pytest.raises(ValueError, match="num_bits"):
        decode_counts({}, -1)
