"""A price-history request read from its JSON bytes, and its stored document, without per-number work.

A 20-asset × 755-row price body carries 15,100 numbers. Validated by pydantic, each becomes a
Python float in a list checked one by one, and the stored document serialises them again one by
one: together most of the API's CPU per such request. Here the matrix is checked as one numpy
array (shape, numbers, finite, positive, at most ``MAX_PRICE``) and the rest of the request goes
through :class:`JobRequest` as usual (the price rows are handed over through the validation
context, not validated twice). The stored document is serialised with the matrix written by
``orjson`` from the array: byte for byte what ``JobRequest.model_dump_json()`` gives (both write
the shortest text that reads back as the same float), so the request hash and the stored
document are those of the general path.

Two readers of the bytes, tried in this order:

* **pysimdjson** (where installed): the matrix goes from the text straight into float64 (its
  ``as_buffer``), with no Python float and no row list; only the other members become Python
  objects. Its buffer flattens nested arrays, so the shape is proved separately: every row is
  an array of one price per asset, and the body holds exactly as many ``[`` as the matrix
  (rows + 1) and the other members (their arrays) account for. A body with a ``[`` inside a
  string is left to the next reader rather than counted. The request then holds the matrix's
  rows as numpy views (sequences of floats): ``request.model_dump_json()`` refuses them, and
  :func:`stored_document` writes them from the array.
* **orjson**: the rows as Python lists, turned into one numpy array.

This is an accelerator, never a second contract: anything it does not recognise as a valid
price body (malformed JSON, a broken rule, booleans or strings among the prices, moments...)
returns ``None`` and the caller validates the body the general way, which names the field and
the rule. ``tests/domain/test_request_json.py`` checks both paths agree on many bodies.

Not imported by ``qhybrid.domain`` itself: the API client uses the domain without ``orjson``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from qhybrid.domain.request import MAX_PRICE, PREVALIDATED_PRICE_ROWS, JobRequest

_simdjson: ModuleType | None
try:
    import simdjson as _simdjson
except ImportError:  # no wheel for this platform: orjson reads every body
    _simdjson = None

#: ``PriceHistory.values``' ``min_length``: checked here, since the rows skip pydantic's list check.
_MIN_ROWS = 3

#: Between the serialised fields around an empty ``values`` (see :func:`stored_document`). A
#: double quote inside a JSON string is always escaped (``\\"``), so ``values":`` cannot occur
#: inside a name or a date; and no other field of the document is an empty list named values.
_EMPTY_VALUES = ',"values":[],'

#: JSON allows no byte order mark; pysimdjson skips one, orjson and pydantic refuse it.
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ParsedPrices:
    """A price-history request read by :func:`parse_price_request`.

    Attributes:
        request: The validated request. Its ``prices.values`` are the rows: read by orjson, as
            the JSON gave them (a number without a fraction is an ``int``, a ``float`` for
            typing's purposes); read by pysimdjson, the rows of ``matrix`` (numpy views).
        rows: That very list (identity tells :func:`stored_document` the matrix still matches).
        matrix: The same prices as a C-contiguous float64 array, one row per date.
    """

    request: JobRequest
    rows: list[Any]
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
    return matrix if _within_bounds(matrix) else None


def _within_bounds(matrix: np.ndarray) -> bool:
    # Both parsers refuse NaN and infinities; the finite check keeps this honest on its own.
    # Comparisons with NaN are false, so it would fail these as well.
    return bool(np.isfinite(matrix).all() and (matrix > 0).all() and (matrix <= MAX_PRICE).all())


def parse_price_request(raw: bytes) -> ParsedPrices | None:
    """The request if ``raw`` is a valid price-history body, read without per-number validation.

    Returns:
        The request, its rows and their matrix; ``None`` for anything else (another kind of
        body, or any broken rule): the caller then validates ``raw`` the general way.
    """
    if b'"values"' not in raw:  # cheap: moments bodies and most others stop here
        return None
    if _simdjson is not None:
        parsed = _read_with_simdjson(raw)
        if parsed is not None:
            return parsed
    return _read_with_orjson(raw)


def _unboxed(value: object) -> object:
    """A pysimdjson value as Python objects (``dict``, ``list``, scalars), like ``orjson.loads``."""
    assert _simdjson is not None
    if isinstance(value, _simdjson.Object):
        return value.as_dict()
    if isinstance(value, _simdjson.Array):
        return value.as_list()
    return value


def _arrays_in(value: object) -> int | None:
    """How many JSON arrays ``value`` holds (itself included); ``None`` if a string in it has a ``[``.

    Strings include object keys. A ``[`` written inside a string of the body would otherwise
    count as an array, and one written as a unicode escape would not: such bodies are not counted.
    """
    arrays = 0
    pending = [value]
    while pending:  # a loop, not recursion: nesting is as deep as the body makes it
        item = pending.pop()
        if isinstance(item, list):
            arrays += 1
            try:
                # A list of strings only (the dates, the names): one scan instead of one per item.
                if "[" in "".join(item):
                    return None
            except TypeError:
                pending.extend(item)
        elif isinstance(item, dict):
            if any("[" in key for key in item):
                return None
            pending.extend(item.values())
        elif isinstance(item, str) and "[" in item:
            return None
    return arrays


def _read_with_simdjson(raw: bytes) -> ParsedPrices | None:
    """:func:`parse_price_request` with pysimdjson: the matrix from the text into float64 at once."""
    assert _simdjson is not None
    if raw.startswith(_BOM):
        return None
    # A parser per body: as fast as reusing one (its buffers are the cost of the parse), and no
    # proxy of an earlier document can be alive in it.
    parser = _simdjson.Parser()
    try:
        top = parser.parse(raw)
        if not isinstance(top, _simdjson.Object):
            return None
        # ``items()`` would unbox every member, the matrix too: members are read one by one, as
        # proxies. A repeated key is left to orjson (pysimdjson finds the first, orjson keeps the last).
        keys = list(top.keys())
        prices = top.get("prices") if len(set(keys)) == len(keys) else None
        if not isinstance(prices, _simdjson.Object):
            return None
        names = list(prices.keys())
        found = prices.get("values") if len(set(names)) == len(names) else None
        if not isinstance(found, _simdjson.Array):
            return None
        document: dict[str, Any] = {key: None if key == "prices" else _unboxed(top[key]) for key in keys}
        rest: dict[str, Any] = {name: None if name == "values" else _unboxed(prices[name]) for name in names}
        assets = rest.get("assets")
        if not isinstance(assets, list) or not assets:
            return None
        height, width = len(found), len(assets)
        if height < _MIN_ROWS:
            return None
        # Every row holds one element per asset. A number for a row has no length (TypeError);
        # a string or an object for a row makes the buffer below raise.
        if set(map(len, found)) != {width}:
            return None
        # Numbers only (a boolean, string, null or object raises), nested arrays flattened.
        flat = np.frombuffer(found.as_buffer(of_type="d"), dtype=np.float64)
    except (ValueError, TypeError, RuntimeError):  # malformed JSON, another type, a big integer
        return None
    del top, prices, found
    document["prices"] = rest
    arrays = _arrays_in(document)
    # Every row is an array of ``width`` elements; no element may be an array as well.
    brackets = int(np.count_nonzero(np.frombuffer(raw, dtype=np.uint8) == ord("[")))  # 4× bytes.count
    if arrays is None or brackets != height + 1 + arrays or flat.size != height * width:
        return None
    matrix = flat.reshape(height, width)
    if not _within_bounds(matrix):
        return None
    rows = list(matrix)  # views: the request's ``prices.values`` without a Python float
    rest["values"] = rows
    return _validated(document, rows, matrix)


def _read_with_orjson(raw: bytes) -> ParsedPrices | None:
    """:func:`parse_price_request` with orjson: the rows as Python lists, then one numpy array."""
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
    return _validated(document, rows, matrix)  # type: ignore[arg-type]


def _validated(document: dict[str, Any], rows: list[Any], matrix: np.ndarray) -> ParsedPrices | None:
    """The rest of ``document`` validated by :class:`JobRequest`, its checked ``rows`` handed over."""
    try:
        request = JobRequest.model_validate(document, context={PREVALIDATED_PRICE_ROWS: rows})
    except ValidationError:
        return None
    return ParsedPrices(request=request, rows=rows, matrix=matrix)


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
