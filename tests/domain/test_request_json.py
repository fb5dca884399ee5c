"""The price body's fast path agrees with pydantic's reading of the same bytes, body for body."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from qhybrid.domain import request_json
from qhybrid.domain.request import MAX_PRICE, PREVALIDATED_PRICE_ROWS, JobRequest
from qhybrid.domain.request_json import ParsedPrices, parse_price_request, price_matrix, stored_document

#: Each reader alone (parse_price_request tries pysimdjson, then orjson).
_READERS = {"simdjson": request_json._read_with_simdjson, "orjson": request_json._read_with_orjson}


@pytest.fixture(params=sorted(_READERS))
def read(request: pytest.FixtureRequest) -> Any:
    """One of the two readers of a price body."""
    return _READERS[request.param]


def _with_lists(request: JobRequest) -> JobRequest:
    """The request with its price rows as lists (the simdjson reader leaves numpy rows)."""
    assert request.prices is not None
    rows = [[float(price) for price in row] for row in request.prices.values]
    return request.model_copy(update={"prices": request.prices.model_copy(update={"values": rows})})


def _number(rng: random.Random, value: float) -> str:
    """One price as a client might write it: shortest repr, fixed digits, exponent, or an integer."""
    form = rng.randrange(5)
    if form == 1:
        text = f"{value:.{rng.randrange(0, 8)}f}"
    elif form == 2:
        text = f"{value:.{rng.randrange(1, 17)}e}".replace("e+", rng.choice(["e+", "E", "e"]))
    elif form == 3:
        text = str(round(value))
    else:
        text = repr(value) if form == 0 else f"{value:.17g}"
    return text if float(text) > 0 else repr(value)  # rounding may have made it 0


def _body(rng: random.Random) -> tuple[dict[str, Any], list[list[str]]]:
    """A random valid price request and the text of each of its prices."""
    width = rng.randrange(2, 9)
    rows = rng.randrange(3, 60)
    scale = 10.0 ** rng.uniform(-6, 9)
    texts = [[_number(rng, rng.uniform(0.5, 2.0) * scale) for _ in range(width)] for _ in range(rows)]
    names = [
        rng.choice(["A", "Bb", " C ", "é", 'q"uote', "back\\slash", "x]y", "values"]) + str(i)
        for i in range(width)
    ]
    prices: dict[str, Any] = {"assets": names, "values": None}
    if rng.random() < 0.5:
        prices["dates"] = [f"d{i}" for i in range(rows)]
    body: dict[str, Any] = {"prices": prices, "budget": rng.randrange(1, width)}
    for key, value in [
        ("estimator", rng.choice(["sample", "ledoit_wolf"])),
        ("returns", "log"),
        ("risk_aversion", rng.uniform(0, 3)),
        ("shots", rng.randrange(1, 5000)),
        ("options", {"seed": rng.randrange(100), "maxiter": 7}),
        ("privacy", "standard"),
        ("max_cost", 12.5),
        ("deadline_seconds", 60),
    ]:
        if rng.random() < 0.4:
            body[key] = value
    if rng.random() < 0.3:
        body["formulation"] = "weights"
        body["budget"] = 2
        body["lot_bounds"] = {names[0].strip(): [0, 2]}
    return body, texts


def _encode(rng: random.Random, body: dict[str, Any], texts: list[list[str]]) -> bytes:
    """The body as JSON with the prices written as given, keys in a random order, random spacing."""
    items = list(body.items())
    rng.shuffle(items)
    prices = dict(body["prices"])
    sep = rng.choice([",", ", ", " ,\n "])
    matrix = "[" + sep.join("[" + sep.join(row) + "]" for row in texts) + "]"
    prices["values"] = "@@VALUES@@"
    text = json.dumps(
        dict([*items, ("prices", prices)]), indent=rng.choice([None, 1]), ensure_ascii=rng.random() < 0.5
    )
    return text.replace('"@@VALUES@@"', matrix).encode()


def _general(raw: bytes) -> str | None:
    """What the general path stores for ``raw`` (``None``: refused)."""
    try:
        return JobRequest.model_validate_json(raw).model_dump_json()
    except ValidationError:
        return None


def test_valid_bodies_give_the_general_paths_document_byte_for_byte(read: Any) -> None:
    rng = random.Random(20261207)
    for _ in range(400):
        body, texts = _body(rng)
        raw = _encode(rng, body, texts)
        parsed = read(raw)
        assert parsed is not None, raw[:300]
        expected = JobRequest.model_validate_json(raw)
        assert _with_lists(parsed.request) == expected
        assert stored_document(parsed.request, parsed) == expected.model_dump_json()
        # As the route uses it: a copy with the deployment's defaults written in.
        copy = parsed.request.model_copy(update={"shots": 99, "privacy": "high"})
        assert (
            stored_document(copy, parsed)
            == expected.model_copy(update={"shots": 99, "privacy": "high"}).model_dump_json()
        )
        np.testing.assert_array_equal(parsed.matrix, np.array(expected.prices.values))  # type: ignore[union-attr]


def test_the_same_request_written_differently_gives_the_same_document(read: Any) -> None:
    rng = random.Random(7)
    body, texts = _body(rng)
    documents = set()
    for _ in range(20):
        parsed = read(_encode(rng, body, [[repr(float(t)) for t in row] for row in texts]))
        assert parsed is not None
        documents.add(stored_document(parsed.request, parsed))
    assert len(documents) == 1


_MUTATIONS: list[tuple[str, str]] = [
    ("negative", "-1.5"),
    ("zero", "0"),
    ("negative zero", "-0.0"),
    ("above the maximum", repr(MAX_PRICE * 1.0000001)),
    ("overflow", "1e999"),
    ("NaN", "NaN"),
    ("Infinity", "Infinity"),
    ("null", "null"),
    ("string", '"abc"'),
    ("numeric string", '"1.5"'),
    ("boolean", "true"),
    ("false", "false"),
    ("object", '{"a": 1}'),
    ("nested list", "[1.5]"),
    ("empty list", "[]"),
    ("huge integer", "123456789012345678901234567890"),
    ("u64 integer", "18446744073709551615"),
]


@pytest.mark.parametrize(("name", "replacement"), _MUTATIONS, ids=[m[0] for m in _MUTATIONS])
def test_a_bad_price_is_never_accepted_by_the_fast_path(name: str, replacement: str, read: Any) -> None:
    rng = random.Random(name)
    for _ in range(20):
        body, texts = _body(rng)
        texts[rng.randrange(len(texts))][rng.randrange(len(texts[0]))] = replacement
        raw = _encode(rng, body, texts)
        general = _general(raw)
        parsed = read(raw)
        if parsed is None:
            continue  # the general path decides (and names the field and rule when it refuses)
        assert general is not None, f"{name}: accepted by the fast path only"
        assert stored_document(parsed.request, parsed) == general


def test_shapes_and_rules_the_fast_path_leaves_to_the_general_path(read: Any) -> None:
    rng = random.Random(3)
    cases = 0
    for _ in range(300):
        body, texts = _body(rng)
        kind = rng.randrange(7)
        if kind == 0:
            texts[rng.randrange(len(texts))].pop()  # a ragged row
        elif kind == 1:
            texts = texts[:2]  # too few rows
        elif kind == 2:
            body["prices"]["assets"] = body["prices"]["assets"][:-1]  # one name short
        elif kind == 3:
            body["prices"]["assets"][1] = body["prices"]["assets"][0]  # a duplicate name
        elif kind == 4:
            body["prices"]["dates"] = ["d0"]  # dates do not match
        elif kind == 5:
            body["budget"] = 0
        else:
            body["unknown"] = 1
        if "dates" in body["prices"] and kind != 4:
            body["prices"]["dates"] = body["prices"]["dates"][: len(texts)]
        raw = _encode(rng, body, texts)
        assert _general(raw) is None
        assert read(raw) is None
        cases += 1
    assert cases == 300


def test_other_bodies_are_left_to_the_general_path(read: Any) -> None:
    moments = {
        "assets": [{"name": "A", "expected_return": 0.01}, {"name": "B", "expected_return": 0.02}],
        "covariance": [[0.1, 0.0], [0.0, 0.2]],
        "budget": 1,
    }
    for raw in [json.dumps(moments).encode(), b"", b"[]", b"{", b'{"prices": {"values": 3}}', b'"values"']:
        assert parse_price_request(raw) is None
        assert read(raw) is None


def test_price_matrix_refuses_what_numpy_would_coerce() -> None:
    assert price_matrix([[1.0, 2.0]] * 3, 2, check_types=False) is not None
    # A boolean among numbers becomes 1.0 in numpy: refused when the body holds one.
    assert price_matrix([[True, 2.0]] * 3, 2, check_types=True) is None
    assert price_matrix([[True, False]] * 3, 2, check_types=False) is None  # bool dtype
    assert price_matrix([["1", "2"]] * 3, 2, check_types=False) is None
    assert price_matrix([[1.0, None]] * 3, 2, check_types=False) is None
    assert price_matrix([[1.0, 2.0]] * 2, 2, check_types=False) is None
    assert price_matrix([[1.0, 2.0], [1.0], [1.0, 2.0]], 2, check_types=False) is None
    assert price_matrix([[1.0, float("nan")]] * 3, 2, check_types=False) is None


def test_the_context_only_skips_the_very_rows_it_names() -> None:
    good = [[1.0, 2.0]] * 3
    bad = [[1.0, -2.0]] * 3
    body = {"prices": {"assets": ["A", "B"], "values": bad}, "budget": 1}
    with pytest.raises(ValidationError, match="positive"):
        JobRequest.model_validate(body, context={PREVALIDATED_PRICE_ROWS: good})
    with pytest.raises(ValidationError, match="positive"):
        JobRequest.model_validate(body)


def test_a_document_whose_rows_were_replaced_is_serialised_in_full() -> None:
    raw = json.dumps({"prices": {"assets": ["A", "B"], "values": [[1, 2]] * 3}, "budget": 1}).encode()
    parsed = parse_price_request(raw)
    assert parsed is not None
    assert parsed.request.prices is not None
    other = parsed.request.model_copy(
        update={"prices": parsed.request.prices.model_copy(update={"values": [[3.0, 4.0]] * 3})}
    )
    assert '"values":[[3.0,4.0],[3.0,4.0],[3.0,4.0]]' in stored_document(other, parsed)
    assert '"values":[[1.0,2.0],[1.0,2.0],[1.0,2.0]]' in stored_document(parsed.request, parsed)


_FIELDS = ["budget", "shots", "max_lots", "risk_aversion", "deadline_seconds", "max_cost", "backend"]
_FIELDS += ["privacy", "estimator", "returns", "formulation", "options.seed", "options.maxiter"]
_FIELDS += ["options.fallback", "options.cvar_alpha", "options.mixer"]
_ODD_VALUES = ["true", "false", '"2"', "2.0", "2.5", "null", '"standard"', '"sample"', "1e2", "[1]", "{}"]
_ODD_VALUES += ['" 2 "', '"2.0"', "-1", "0", "1", '"weights"', '"x-warm"', '"log"']


@pytest.mark.parametrize("field", _FIELDS)
def test_other_fields_read_the_same_in_python_mode_as_from_json(field: str, read: Any) -> None:
    # The fast path validates the rest of the body from orjson's objects (pydantic's Python mode);
    # the general path from the bytes (JSON mode). Acceptances must agree, refusals too.
    accepted = 0
    for value in _ODD_VALUES:
        body: dict[str, Any] = {
            "prices": {"assets": ["A", "B", "C"], "values": [[1.0, 2.0, 3.0]] * 4},
            "budget": 1,
        }
        parent, _, name = field.rpartition(".")
        (body.setdefault(parent, {}) if parent else body)[name] = "@"
        raw = json.dumps(body).replace('"@"', value).encode()
        parsed = read(raw)
        general = _general(raw)
        if parsed is not None:
            accepted += 1
            assert stored_document(parsed.request, parsed) == general, (field, value)
    assert accepted  # some odd value of every field is accepted: the comparison ran


_SHAPES = [
    ("a one-price array in a row", "[[1.5, [2.5]], [1.5, 2.5], [1.5, 2.5]]"),
    ("a nested row", "[[[1.5, 2.5]], [1.5, 2.5], [1.5, 2.5]]"),
    ("a row split in two", "[[1.5], [2.5], [1.5, 2.5], [1.5, 2.5]]"),
    ("a number for a row, the count made up", "[1.5, [2.5, [1.5, 2.5]], [1.5, 2.5], [1.5, 2.5]]"),
    ("ragged rows of the right total", "[[1.5, 2.5, 3.5], [1.5], [1.5, 2.5], [1.5, 2.5]]"),
    ("an empty array in a row", "[[1.5, 2.5, []], [1.5, 2.5], [1.5, 2.5]]"),
    ("an object for a row", '[{"a": 1.5, "b": 2.5}, [1.5, 2.5], [1.5, 2.5]]'),
    ("a string for a row", '["ab", [1.5, 2.5], [1.5, 2.5]]'),
    ("null", "[[null, 2.5], [1.5, 2.5], [1.5, 2.5]]"),
    ("a boolean", "[[true, 2.5], [1.5, 2.5], [1.5, 2.5]]"),
    ("a string", '[["2.5", 2.5], [1.5, 2.5], [1.5, 2.5]]'),
]


@pytest.mark.parametrize(("name", "matrix"), _SHAPES, ids=[s[0] for s in _SHAPES])
def test_a_matrix_that_is_not_one_number_per_cell_is_refused(name: str, matrix: str, read: Any) -> None:
    # pysimdjson's buffer flattens nested arrays: [[1.5, [2.5]], ...] would read as [[1.5, 2.5], ...].
    for names in ('"A", "B"', '"A", "B\\u005b"', '"A[", "B"'):
        raw = f'{{"prices": {{"assets": [{names}], "values": {matrix}}}, "budget": 1}}'.encode()
        assert _general(raw) is None, name
        assert read(raw) is None, name
        assert parse_price_request(raw) is None, name


def _valid(names: str = '"A", "B"', extra: str = "") -> bytes:
    prices = f'"assets": [{names}], "values": [[1, 2], [3, 4.5], [5, 6]]{extra}'
    return f'{{"prices": {{{prices}}}, "budget": 1}}'.encode()


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("a [ in a name", _valid('"A[", "B"')),
        ("an escaped [ in a name", _valid('"A\\u005b", "B"')),
        ("a [ in a date", _valid(extra=', "dates": ["a", "b[", "c"]')),
        ("a repeated key", _valid(extra=', "values": [[1, 2], [3, 4], [5, 7]]')),
        ("a byte order mark", b"\xef\xbb\xbf" + _valid()),
    ],
)
def test_bodies_pysimdjson_does_not_read_go_to_orjson_or_pydantic(name: str, raw: bytes) -> None:
    assert request_json._read_with_simdjson(raw) is None, name
    parsed = parse_price_request(raw)
    general = JobRequest.model_validate(json.loads(raw))  # json.loads: the route's second try
    if parsed is not None:
        assert stored_document(parsed.request, parsed) == general.model_dump_json(), name


def test_pysimdjson_reads_the_matrix_without_python_floats() -> None:
    parsed = request_json._read_with_simdjson(_valid())
    assert isinstance(parsed, ParsedPrices)
    assert all(isinstance(row, np.ndarray) and row.base is not None for row in parsed.rows)
    np.testing.assert_array_equal(parsed.matrix, [[1, 2], [3, 4.5], [5, 6]])
    assert '"values":[[1.0,2.0],[3.0,4.5],[5.0,6.0]]' in stored_document(parsed.request, parsed)
    with pytest.raises(Exception, match="ndarray"):  # never serialised by pydantic by mistake
        parsed.request.model_dump_json()


def test_without_pysimdjson_orjson_reads_price_bodies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(request_json, "_simdjson", None)
    parsed = parse_price_request(_valid())
    assert parsed is not None
    assert isinstance(parsed.rows[0], list)
    expected = JobRequest.model_validate_json(_valid()).model_dump_json()
    assert stored_document(parsed.request, parsed) == expected


def test_random_damage_to_the_matrix_text_is_never_accepted_wrongly(read: Any) -> None:
    # Brackets, commas, numbers and other values inserted or removed at random in the matrix's
    # text: whatever a reader accepts, pydantic accepts too and stores the same document.
    rng = random.Random(12)
    pieces = ["[", "]", ",", "1.5", "[2]", "true", '"x"', "null", "-1", "1e999", "{}", " "]
    accepted = refused = 0
    for _ in range(600):
        body, texts = _body(rng)
        raw = _encode(rng, body, texts).decode()
        start = raw.index('"values"') + len('"values"')
        end = start + raw[start:].index("]]") + 2
        matrix = list(raw[start:end])
        for _ in range(rng.randrange(1, 3)):
            at = rng.randrange(len(matrix))
            if rng.random() < 0.5:
                matrix.insert(at, rng.choice(pieces))
            else:
                del matrix[at]
        damaged = (raw[:start] + "".join(matrix) + raw[end:]).encode()
        general = _general(damaged)
        parsed = read(damaged)
        if parsed is None:
            refused += 1
            continue
        accepted += 1
        assert general is not None, damaged[start - 10 : end + 10]
        assert stored_document(parsed.request, parsed) == general
    assert accepted and refused  # both kinds of outcome were exercised
