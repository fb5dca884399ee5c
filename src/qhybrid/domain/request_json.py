"""A price-history request read from its JSON bytes, and its stored document, without per-number work.

A 20-asset × 755-row price body carries 15,100 numbers. Validated by pydantic, each becomes a
Python float in a list checked one by one, and the stored document serialises them again one by
one: together most of the API's CPU per such request. Here the bytes are parsed by ``orjson``,
the matrix is checked as one numpy array (shape, numbers, finite, positive, at most
``MAX_PRICE``) and the rest of the request goes through :class:`JobRequest` as usual (the
price rows are handed over through the validation context, not validated twice). The stored
document is serialised with the matrix written by ``orjson`` from the array: byte for byte
what ``JobRequest.model_dump_json()`` gives (both write the shortest text that reads back as
the same float), so the request hash and the stored document are those of the general path.

This is an accelerator, never a second contract: anything it does not recognise as a valid
price body (malformed JSON, a broken rule, booleans or strings among the prices, moments...)
returns ``None`` and the caller validates the body the general way, which names the field and
the rule. ``tests/domain/test_request_json.py`` checks both paths agree on many bodies.

Not imported by ``qhybrid.domain`` itself: the API client uses the domain without ``orjson``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import orjson
from pydantic import ValidationError

from qhybrid.domain.request import MAX_PRICE, PREVALIDATED_PRICE_ROWS, JobRequest

#: ``PriceHistory.values``' ``min_length``: checked here, since the rows skip pydantic's list check.
_MIN_ROWS = 3

#: Between the serialised fields around an empty ``values`` (see :func:`stored_document`). A
#: double quote inside a JSON string is always escaped (``\\"``), so ``values":`` cannot occur
#: inside a name or a date; and no other field of the document is an empty list named values.
_EMPTY_VALUES = ',"values":[],'


@dataclass(frozen=True)
class ParsedPrices:
    """A price-history request read by :func:`parse_price_request`.

    Attributes:
        request: The validated request. Its ``prices.values`` are the rows as the JSON gave them
            (a number without a fraction is an ``int``, a ``float`` for typing's purposes).
        rows: That very list (identity tells :func:`stored_document` the matrix still matches).
        matrix: The same prices as a C-contiguous float64 array, one row per date.
    """

    request: JobRequest
    rows: list[list[float]]
    matrix: np.ndarray


def price_matrix(rows: object, width: int, *, check_types: bool) -> np.ndarray | None:
    """The price rows as a float64 array if they pass every rule of ``PriceHistory.values``, else ``None``.

    Args:
        rows: The ``values`` member as ``orjson`` parsed it.
        width: The number of asset names (columns).
        check_types: Look at every element's type: needed when the body holds a JSON ``true`` or
            ``false`` anywhere, since numpy would turn a boolean among numbers into 1.0 or 0.0
            where the contract refuses it.
    """
    if not isinstance(rows, list) or len(rows) < _MIN_ROWS:
        return None
    try:
        # No dtype: numbers give int64 or float64; strings, null, objects, booleans alone and
        # ragged or nested rows give another kind, another shape or an error.
        array = np.array(rows)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.ndim != 2 or array.shape[1] != width or array.dtype.kind not in "if":
        return None
    if check_types and not set(map(type, itertools.chain.from_iterable(rows))) <= {float, int}:
        return None
    matrix = np.ascontiguousarray(array, dtype=np.float64)
    # orjson refuses NaN and infinities when parsing; the finite check keeps this function
    # honest on its own. Comparisons with NaN are false, so it would fail these as well.
    if not (np.isfinite(matrix).all() and (matrix > 0).all() and (matrix <= MAX_PRICE).all()):
        return None
    return matrix


def parse_price_request(raw: bytes) -> ParsedPrices | None:
    """The request if ``raw`` is a valid price-history body, read without per-number validation.

    Returns:
        The request, its rows and their matrix; ``None`` for anything else (another kind of
        body, or any broken rule): the caller then validates ``raw`` the general way.
    """
    if b'"values"' not in raw:  # cheap: moments bodies and most others stop here
        return None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    prices = document.get("prices")
    if not isinstance(prices, dict) or not isinstance(prices.get("assets"), list):
        return None
    rows = prices.get("values")
    check_types = b"true" in raw or b"false" in raw
    matrix = price_matrix(rows, len(prices["assets"]), check_types=check_types)
    if matrix is None:
        return None
    try:
        request = JobRequest.model_validate(document, context={PREVALIDATED_PRICE_ROWS: rows})
    except ValidationError:
        return None
    return ParsedPrices(request=request, rows=rows, matrix=matrix)  # type: ignore[arg-type]


def stored_document(request: JobRequest, parsed: ParsedPrices | None = None) -> str:
    """``request.model_dump_json()``, with a parsed price matrix written from its array.

    Args:
        request: The request to store (a copy of ``parsed.request`` with defaults filled in is fine).
        parsed: What :func:`parse_price_request` returned for it, if anything. Used only while
            ``request.prices.values`` is still ``parsed.rows`` (the same list object).

    Returns:
        The canonical JSON text of the request, identical to ``request.model_dump_json()``.
    """
    prices = request.prices
    if parsed is None or prices is None or prices.values is not parsed.rows:
        return request.model_dump_json()
    shell = request.model_copy(update={"prices": prices.model_copy(update={"values": []})})
    head, found, tail = shell.model_dump_json().partition(_EMPTY_VALUES)
    if not found or _EMPTY_VALUES in tail:
        return request.model_dump_json()
    matrix = orjson.dumps(parsed.matrix, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return f'{head},"values":{matrix},{tail}'
