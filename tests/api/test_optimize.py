"""POST /optimize_portfolio: 202 for a good request, a 4xx naming the field for a bad one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from qhybrid.api.main import create_app
from qhybrid.core.config import Settings
from tests.api.conftest import job_count, valid_request


def test_accepts_and_points_to_the_job(client: TestClient) -> None:
    response = client.post("/optimize_portfolio", json=valid_request())
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    assert response.headers["location"] == f"/jobs/{body['job_id']}"
    job = client.get(response.headers["location"], params={"include": "request"}).json()
    assert job["status"] == "accepted"
    assert job["request"]["assets"][0]["name"] == "AAPL"
    assert [e["status"] for e in job["events"]] == ["accepted"]
    assert job_count(client) == 1
    # The kick is on the queue, carrying nothing but the job id.
    pending = client.app.state.services.queue.huey.pending()  # type: ignore[attr-defined]
    assert [t.args for t in pending] == [(body["job_id"],)]


def test_defaults_are_filled_in(client: TestClient) -> None:
    request = valid_request()
    del request["shots"], request["backend"], request["risk_aversion"]
    job_id = client.post("/optimize_portfolio", json=request).json()["job_id"]
    stored = client.get(f"/jobs/{job_id}", params={"include": "request"}).json()
    assert stored["shots"] == 2048
    assert stored["backend"] == "emulated-cloud"  # the emulated cloud, formerly named "local"
    assert stored["request"]["risk_aversion"] == 0.5


def test_idempotency_key_returns_the_same_job(client: TestClient) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = client.post("/optimize_portfolio", json=valid_request(), headers=headers)
    second = client.post("/optimize_portfolio", json=valid_request(), headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["job_id"] == second.json()["job_id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert job_count(client) == 1
    conflict = client.post("/optimize_portfolio", json=valid_request(budget=2), headers=headers)
    assert conflict.status_code == 409
    assert "idempotency-key" in conflict.json()["message"]
    assert job_count(client) == 1


def prices_request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prices": {
            "assets": ["AAPL", "MSFT", "KO"],
            "values": [
                [100.0, 200.0, 50.0],
                [101.0, 199.0, 50.5],
                [102.5, 201.0, 50.2],
                [101.8, 203.0, 50.9],
            ],
            "dates": ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"],
        },
        "budget": 1,
    }
    body.update(overrides)
    return body


def weights_request(**overrides: Any) -> dict[str, Any]:
    body = {"formulation": "weights", "budget": 4, "max_lots": 3}
    body.update(overrides)
    return valid_request(**body)


def _nan_body() -> str:
    text = json.dumps(valid_request())
    return text.replace("0.0012", "NaN", 1)


def _inf_body() -> str:
    text = json.dumps(valid_request())
    return text.replace("0.00024", "Infinity", 1)


# Just over the default 16 MB limit (QHYBRID_MAX_BODY_BYTES); the body is refused before it is parsed.
BIG = b'{"assets": [' + b'{"name": "A", "expected_return": 0.1},' * 440_000 + b"]}"

# (case id, request kwargs for client.post, expected status, field the message must name)
BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    (
        "nan-return",
        {"content": _nan_body(), "headers": {"content-type": "application/json"}},
        422,
        "assets[0].expected_return",
    ),
    (
        "infinite-covariance",
        {"content": _inf_body(), "headers": {"content-type": "application/json"}},
        422,
        "covariance[1][1]",
    ),
    (
        "asymmetric",
        {"json": valid_request(covariance=[[0.3, 0.1, 0.0], [0.2, 0.3, 0.0], [0.0, 0.0, 0.1]])},
        422,
        "covariance",
    ),
    (
        "not-psd",
        {"json": valid_request(covariance=[[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])},
        422,
        "covariance",
    ),
    ("wrong-size", {"json": valid_request(covariance=[[1.0, 0.0], [0.0, 1.0]])}, 422, "covariance"),
    (
        "ragged",
        {"json": valid_request(covariance=[[1.0, 0.0, 0.0], [0.0, 1.0], [0.0, 0.0, 1.0]])},
        422,
        "covariance",
    ),
    ("empty-covariance", {"json": valid_request(covariance=[])}, 422, "covariance"),
    ("budget-zero", {"json": valid_request(budget=0)}, 422, "budget"),
    ("budget-equals-n", {"json": valid_request(budget=3)}, 422, "budget"),
    (
        "duplicate-names",
        {
            "json": valid_request(
                assets=[
                    {"name": "A", "expected_return": 0.1},
                    {"name": "B", "expected_return": 0.1},
                    {"name": "A", "expected_return": 0.2},
                ]
            )
        },
        422,
        "assets",
    ),
    (
        "empty-name",
        {
            "json": valid_request(
                assets=[
                    {"name": "", "expected_return": 0.1},
                    {"name": "B", "expected_return": 0.1},
                    {"name": "C", "expected_return": 0.2},
                ]
            )
        },
        422,
        "assets[0].name",
    ),
    (
        "one-asset",
        {"json": valid_request(assets=[{"name": "A", "expected_return": 0.1}], covariance=[[1.0]])},
        422,
        "assets",
    ),
    ("unknown-backend", {"json": valid_request(backend="dwave-annealer")}, 422, "backend"),
    ("zero-shots", {"json": valid_request(shots=0)}, 422, "shots"),
    ("too-many-shots", {"json": valid_request(shots=10_000_000)}, 422, "shots"),
    ("negative-risk-aversion", {"json": valid_request(risk_aversion=-1)}, 422, "risk_aversion"),
    ("string-number", {"json": valid_request(budget="two")}, 422, "budget"),
    ("unknown-field", {"json": valid_request(leverage=3)}, 422, "leverage"),
    (
        "missing-covariance",
        {"json": {k: v for k, v in valid_request().items() if k != "covariance"}},
        422,
        "covariance",
    ),
    ("bad-option", {"json": valid_request(options={"reps": 99})}, 422, "options.reps"),
    ("unknown-option", {"json": valid_request(options={"optimizer": "magic"})}, 422, "options.optimizer"),
    ("array-body", {"json": [1, 2, 3]}, 422, "body"),
    (
        "malformed-json",
        {"content": b'{"assets": [', "headers": {"content-type": "application/json"}},
        400,
        "body",
    ),
    (
        "wrong-content-type",
        {"content": json.dumps(valid_request()), "headers": {"content-type": "text/plain"}},
        415,
        "content-type",
    ),
    (
        "no-content-type",
        {"content": json.dumps(valid_request()).encode(), "headers": {"content-type": ""}},
        415,
        "content-type",
    ),
    ("oversize-body", {"content": BIG, "headers": {"content-type": "application/json"}}, 413, "body"),
    ("unknown-fake-backend", {"json": valid_request(backend="ibm-local:FakeNowhere")}, 422, "backend"),
    (
        "braket-without-bucket",
        {"json": valid_request(backend="braket:arn:aws:braket:::device/quantum-simulator/amazon/sv1")},
        422,
        "backend",
    ),
    ("ibm-without-token", {"json": valid_request(backend="ibm:ibm_torino")}, 422, "backend"),
    (
        "braket-dm-too-small",
        {"json": weights_request(backend="braket-local:dm", max_lots=31, budget=10)},
        422,
        "backend",
    ),
    ("negative-max-cost", {"json": valid_request(max_cost=-1)}, 422, "max_cost"),
    ("prices-and-assets", {"json": {**valid_request(), "prices": prices_request()["prices"]}}, 422, "prices"),
    ("neither-prices-nor-assets", {"json": {"budget": 1}}, 422, "prices"),
    ("covariance-without-assets", {"json": {"covariance": [[1.0]], "budget": 1}}, 422, "covariance"),
    (
        "prices-ragged",
        {"json": prices_request(prices={"assets": ["A", "B"], "values": [[1.0, 2.0], [1.0], [1.0, 2.0]]})},
        422,
        "prices.values",
    ),
    (
        "prices-negative",
        {
            "json": prices_request(
                prices={"assets": ["A", "B"], "values": [[1.0, 2.0], [1.0, -2.0], [1.0, 2.0]]}
            )
        },
        422,
        "prices.values",
    ),
    (
        "prices-too-few-rows",
        {"json": prices_request(prices={"assets": ["A", "B"], "values": [[1.0, 2.0], [1.0, 2.0]]})},
        422,
        "prices.values",
    ),
    (
        "prices-duplicate-names",
        {"json": prices_request(prices={"assets": ["A", "A"], "values": [[1.0, 2.0]] * 3})},
        422,
        "prices.assets",
    ),
    (
        "prices-dates-mismatch",
        {"json": prices_request(prices={"assets": ["A", "B"], "values": [[1.0, 2.0]] * 3, "dates": ["d1"]})},
        422,
        "prices.dates",
    ),
    ("unknown-estimator", {"json": prices_request(estimator="magic")}, 422, "estimator"),
    ("weights-infeasible-budget", {"json": weights_request(budget=10)}, 422, "lot_bounds"),
    ("weights-bad-bounds", {"json": weights_request(lot_bounds={"AAPL": [3, 1]})}, 422, "lot_bounds"),
    (
        "weights-unknown-asset-bound",
        {"json": weights_request(lot_bounds={"TSLA": [0, 2]})},
        422,
        "lot_bounds",
    ),
    ("bounds-without-weights", {"json": valid_request(lot_bounds={"AAPL": [0, 2]})}, 422, "lot_bounds"),
    ("xy-mixer-with-weights", {"json": weights_request(options={"mixer": "xy"})}, 422, "options"),
    ("xy-warm-mixer-with-weights", {"json": weights_request(options={"mixer": "xy-warm"})}, 422, "options"),
    ("unknown-mixer", {"json": valid_request(options={"mixer": "grover"})}, 422, "options.mixer"),
    ("unknown-privacy-level", {"json": valid_request(privacy="secret")}, 422, "privacy"),
    ("privacy-not-a-string", {"json": valid_request(privacy=3)}, 422, "privacy"),
    (
        "cvar-alpha-zero",
        {"json": valid_request(options={"objective": "cvar", "cvar_alpha": 0})},
        422,
        "options.cvar_alpha",
    ),
    # JSON's types as JSON means them: no lax conversion of booleans, strings or fractions.
    ("budget-a-boolean", {"json": valid_request(budget=True)}, 422, "budget"),
    ("budget-a-fraction", {"json": valid_request(budget=1.0)}, 422, "budget"),
    ("shots-a-string", {"json": valid_request(shots="2048")}, 422, "shots"),
    ("risk-aversion-a-string", {"json": valid_request(risk_aversion="0.5")}, 422, "risk_aversion"),
    (
        "expected-return-a-boolean",
        {
            "json": valid_request(
                assets=[{"name": "A", "expected_return": True}, {"name": "B", "expected_return": 0.1}],
                covariance=[[0.1, 0.0], [0.0, 0.1]],
            )
        },
        422,
        "assets",
    ),
    (
        "covariance-a-string",
        {
            "json": valid_request(
                covariance=[
                    ["0.00031", 0.00012, 0.00005],
                    [0.00012, 0.00024, 0.00004],
                    [0.00005, 0.00004, 0.0001],
                ]
            )
        },
        422,
        "covariance",
    ),
    (
        "price-a-boolean",
        {
            "json": prices_request(
                prices={"assets": ["A", "B"], "values": [[True, 2.0], [1.0, 2.0], [1.0, 2.0]]}
            )
        },
        422,
        "prices.values",
    ),
    (
        "price-a-string",
        {
            "json": prices_request(
                prices={"assets": ["A", "B"], "values": [["1.5", 2.0], [1.0, 2.0], [1.0, 2.0]]}
            )
        },
        422,
        "prices.values",
    ),
    ("fallback-a-string", {"json": valid_request(options={"fallback": "no"})}, 422, "options.fallback"),
    ("seed-a-string", {"json": valid_request(options={"seed": "7"})}, 422, "options.seed"),
    (
        "bad-idempotency-key",
        {"json": valid_request(), "headers": {"Idempotency-Key": "x" * 300}},
        422,
        "idempotency-key",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "field"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_input_is_refused_with_the_field_named_and_nothing_stored(
    client: TestClient, body: dict[str, Any], status: int, field: str
) -> None:
    response = client.post("/optimize_portfolio", **body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error", "message", "errors"}
    assert field in payload["message"], payload
    assert payload["errors"], payload
    assert any(item["field"].startswith(field) for item in payload["errors"]), payload
    assert all(item["rule"] for item in payload["errors"])
    assert job_count(client) == 0
    assert client.app.state.services.queue.pending() == 0  # type: ignore[attr-defined]


def test_prices_are_accepted_instead_of_moments(client: TestClient) -> None:
    response = client.post("/optimize_portfolio", json=prices_request(estimator="sample", returns="log"))
    assert response.status_code == 202, response.text
    stored = client.get(response.headers["location"], params={"include": "request"}).json()["request"]
    assert stored["prices"]["assets"] == ["AAPL", "MSFT", "KO"]
    assert stored["estimator"] == "sample" and stored["returns"] == "log"
    assert stored["assets"] is None


def test_a_price_body_written_differently_is_the_same_request(client: TestClient) -> None:
    # The fast path writes the stored matrix from numpy: the hash must still be the canonical one.
    headers = {"Idempotency-Key": "prices-7", "Content-Type": "application/json"}
    body = prices_request(risk_aversion=0.25)
    first = client.post("/optimize_portfolio", content=json.dumps(body), headers=headers)
    assert first.status_code == 202, first.text
    # Same numbers: integers for whole prices, exponents, other spacing, keys in another order.
    values = "[[100, 2e2, 50], [101.00, 199, 5.05E1], [102.5, 201, 50.2], [1.018e+2, 203, 50.90]]"
    prices = dict(body["prices"], values="@")
    text = json.dumps({"risk_aversion": 0.25, "budget": 1, "prices": prices}, indent=2)
    second = client.post("/optimize_portfolio", content=text.replace('"@"', values), headers=headers)
    assert second.status_code == 202, second.text
    assert second.json()["job_id"] == first.json()["job_id"]
    assert second.headers["idempotent-replayed"] == "true"
    stored = client.get(first.headers["location"], params={"include": "request"}).json()["request"]
    assert stored["prices"]["values"] == body["prices"]["values"]
    assert all(type(v) is float for row in stored["prices"]["values"] for v in row)
    # One price changed: another request under the same key.
    changed = client.post(
        "/optimize_portfolio", content=text.replace('"@"', values.replace("50.90", "50.91")), headers=headers
    )
    assert changed.status_code == 409
    assert job_count(client) == 1


def test_weights_are_accepted_with_bounds(client: TestClient) -> None:
    response = client.post("/optimize_portfolio", json=weights_request(lot_bounds={"AAPL": [1, 3]}))
    assert response.status_code == 202, response.text
    stored = client.get(response.headers["location"], params={"include": "request"}).json()["request"]
    assert stored["formulation"] == "weights"
    assert stored["lot_bounds"] == {"AAPL": [1, 3]}


def test_rules_are_named(client: TestClient) -> None:
    response = client.post(
        "/optimize_portfolio",
        json=valid_request(covariance=[[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
    )
    item = response.json()["errors"][0]
    assert item == {
        "field": "covariance",
        "rule": "positive_semidefinite",
        "message": "covariance must be positive semi-definite: smallest eigenvalue is -1",
    }


def test_psd_tolerance_accepts_rounding(client: TestClient) -> None:
    # A rank-deficient covariance (perfectly correlated assets) rounds to a tiny negative eigenvalue.
    sigma = [[0.0004, 0.0004, 0.0], [0.0004, 0.0004, 0.0], [0.0, 0.0, 0.0001]]
    assert client.post("/optimize_portfolio", json=valid_request(covariance=sigma)).status_code == 202


def test_configured_limit_on_assets(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_assets": 2}))) as small:
        response = small.post("/optimize_portfolio", json=valid_request())
        assert response.status_code == 422
        assert response.json()["errors"][0]["rule"] == "max_assets"
        assert "QHYBRID_MAX_ASSETS" in response.json()["message"]
        assert job_count(small) == 0


def test_every_backend_form_is_accepted(client: TestClient) -> None:
    for backend in ("local", "cloud", "braket-local", "braket-local:dm", "ibm-local:FakeTorino"):
        response = client.post("/optimize_portfolio", json=valid_request(backend=backend))
        assert response.status_code == 202, (backend, response.text)
        assert response.json()["estimated_cost"] == 0.0


def test_max_cost_refuses_an_expensive_submission(settings: Settings) -> None:
    priced = settings.model_copy(update={"cloud_price_per_task": 0.3, "cloud_price_per_shot": 0.001})
    with TestClient(create_app(priced)) as client:
        response = client.post("/optimize_portfolio", json=valid_request(shots=2000, max_cost=1.0))
        assert response.status_code == 422
        item = response.json()["errors"][0]
        assert item["field"] == "max_cost"
        assert "estimated cost 2.30 USD" in item["message"]
        assert job_count(client) == 0
        accepted = client.post("/optimize_portfolio", json=valid_request(shots=500, max_cost=1.0))
        assert accepted.status_code == 202
        assert accepted.json()["estimated_cost"] == pytest.approx(0.8)
        cost = client.get(accepted.headers["location"]).json()["cost"]
        assert cost["estimated"] == pytest.approx(0.8)
        assert cost["actual"] is None
        assert cost["pricing"]["per_task"] == 0.3


def test_configured_limit_on_qubits(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_qubits": 8}))) as small:
        # Three assets of up to 7 lots need 3 bits each: 9 qubits (privacy off: no decoys).
        response = small.post("/optimize_portfolio", json=weights_request(max_lots=7, privacy="off"))
        assert response.status_code == 422
        assert response.json()["errors"][0] == {
            "field": "lot_bounds",
            "rule": "max_qubits",
            "message": "the problem needs 9 qubits; at most 8 are allowed (QHYBRID_MAX_QUBITS)",
        }
        assert job_count(small) == 0


def test_decoys_count_against_the_qubit_limit(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_qubits": 9}))) as small:
        assert (
            small.post("/optimize_portfolio", json=weights_request(max_lots=7, privacy="off")).status_code
            == 202
        )
        # "high" adds ceil(9 / 8) = 2 decoys; "standard" adds none.
        standard = small.post("/optimize_portfolio", json=weights_request(max_lots=7, privacy="standard"))
        assert standard.status_code == 202
        refused = small.post("/optimize_portfolio", json=weights_request(max_lots=7, privacy="high"))
        assert refused.status_code == 422
        assert refused.json()["errors"][0] == {
            "field": "privacy",
            "rule": "max_qubits",
            "message": "privacy 'high' adds 2 decoy qubits to the problem's 9: 11 qubits; at most 9 are "
            "allowed (QHYBRID_MAX_QUBITS); choose a lower privacy level or a smaller problem",
        }
        assert job_count(small) == 2


def test_api_keys_when_configured(settings: Settings) -> None:
    # A bare key (no "tenant:") belongs to tenant "default", as before tenants existed.
    keyed = settings.model_copy(update={"api_keys": [SecretStr("s3cret")]})
    with TestClient(create_app(keyed)) as guarded:
        refused = guarded.post("/optimize_portfolio", json=valid_request())
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        wrong = guarded.get("/jobs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = guarded.post(
            "/optimize_portfolio", json=valid_request(), headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 202
        assert guarded.get("/healthz").status_code == 200  # probes stay open
        assert job_count(guarded) == 1
