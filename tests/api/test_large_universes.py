"""Universes of hundreds of assets at the API: accepted in both input forms within the body limit,
refused with the field named beyond QHYBRID_MAX_ASSETS, and the job marked for decomposition."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from qhybrid.api.main import create_app
from qhybrid.core.config import Settings
from qhybrid.domain.request import JobRequest
from qhybrid.jobs.sizing import is_decomposed
from qhybrid.portfolio.factor_model import factor_universe
from tests.api.conftest import job_count


def moments_request(n: int) -> dict[str, Any]:
    names, mu, sigma = factor_universe(n, seed=3)
    return {
        "assets": [{"name": name, "expected_return": float(m)} for name, m in zip(names, mu, strict=True)],
        "covariance": sigma.tolist(),
        "risk_aversion": 0.5,
        "budget": n // 10,
        "backend": "local",
    }


def prices_request(n: int, rows: int = 260) -> dict[str, Any]:
    names, mu, sigma = factor_universe(n, seed=4)
    rng = np.random.default_rng(4)
    returns = rng.multivariate_normal(mu, sigma, size=rows - 1)
    prices = 100.0 * np.vstack([np.ones(n), np.cumprod(1.0 + returns, axis=0)])
    return {
        "prices": {"assets": list(names), "values": prices.tolist()},
        "budget": n // 10,
        "backend": "local",
    }


@pytest.mark.parametrize("form", ["moments", "prices"])
def test_a_500_asset_request_is_accepted_within_the_body_limit(
    client: TestClient, settings: Settings, form: str
) -> None:
    body = moments_request(500) if form == "moments" else prices_request(500)
    content = json.dumps(body).encode()
    # Full float64 text, as a client serialises it: still under the default body limit.
    assert len(content) < settings.max_body_bytes
    response = client.post(
        "/optimize_portfolio", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 202, response.text
    job = client.get(response.json()["links"]["self"]).json()
    assert job["status"] == "accepted"
    stored = JobRequest.model_validate(body)
    assert stored.num_qubits() == 500
    # Far more qubits than one program may use: the worker will decompose it.
    assert is_decomposed(stored, settings, None)


@pytest.mark.parametrize("form", ["moments", "prices"])
def test_more_assets_than_the_limit_are_refused_naming_the_field(settings: Settings, form: str) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_assets": 100}))) as small:
        body = moments_request(101) if form == "moments" else prices_request(101, rows=30)
        response = small.post("/optimize_portfolio", json=body)
        assert response.status_code == 422
        error = response.json()["errors"][0]
        assert error["field"] == ("assets" if form == "moments" else "prices.assets")
        assert error["rule"] == "max_assets"
        assert "QHYBRID_MAX_ASSETS" in error["message"]
        assert job_count(small) == 0


def test_weights_beyond_the_qubit_limit_are_still_refused(client: TestClient) -> None:
    # Only selections are decomposed; integer lots keep the single-program limit.
    body = {**moments_request(30), "formulation": "weights", "budget": 30}
    response = client.post("/optimize_portfolio", json=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["rule"] == "max_qubits"


def test_a_decomposed_request_whose_sub_problem_cannot_fit_its_decoys_is_refused(settings: Settings) -> None:
    tight = settings.model_copy(update={"subproblem_qubits": 2})
    with TestClient(create_app(tight)) as client:
        response = client.post("/optimize_portfolio", json={**moments_request(40), "privacy": "high"})
        assert response.status_code == 422
        error = response.json()["errors"][0]
        assert (error["field"], error["rule"]) == ("privacy", "subproblem_qubits")
        assert job_count(client) == 0
