"""The OpenAPI document describes what the API really answers: typed job, errors, headers, auth."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from qhybrid.domain.request import JobRequest
from qhybrid.domain.states import STATUS_NAMES
from tests.api.conftest import valid_request


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in node:  # Optional[...]: the non-null branch
        node = next(branch for branch in node["anyOf"] if branch.get("type") != "null")
        return _resolve(spec, node)
    return node


def test_the_job_document_is_typed(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ok = spec["paths"]["/jobs/{job_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    document = _resolve(spec, ok)
    status = _resolve(spec, document["properties"]["status"])
    assert status["enum"] == list(STATUS_NAMES)
    result = _resolve(spec, document["properties"]["result"])
    for field in ("selected", "objective", "source", "classical", "quantum", "baselines", "gap", "fallback"):
        assert field in result["properties"], field
    assert _resolve(spec, result["properties"]["source"])["enum"] == [
        "quantum",
        "quantum+refinement",
        "quantum+decomposition",
        "classical_baseline",
        "classical_fallback",
    ]
    quantum = _resolve(spec, result["properties"]["quantum"])
    assert {
        "backend",
        "task_id",
        "circuit",
        "qaoa",
        "privacy",
        "link",
        "samples",
        "contribution",
        "readout",
    } <= set(quantum["properties"])
    assert _resolve(spec, document["properties"]["request"])["title"] == "JobRequest"
    assert _resolve(spec, document["properties"]["cost"])["title"] == "Cost"


def test_every_error_is_documented_with_the_shape_the_api_answers(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            for code, response in operation["responses"].items():
                if code.startswith("4"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, method, code)
    answered = client.get("/jobs/nope")
    assert set(answered.json()) == {"error", "message", "errors"}


def test_location_auth_and_operation_ids_are_documented(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    submit = spec["paths"]["/optimize_portfolio"]["post"]
    assert "Location" in submit["responses"]["202"]["headers"]
    schemes = spec["components"]["securitySchemes"]
    assert any(
        s == {"type": "http", "scheme": "bearer", "description": s.get("description")}
        for s in schemes.values()
    )
    assert submit["security"]
    ids = {op["operationId"] for methods in spec["paths"].values() for op in methods.values()}
    assert {"submit_job", "get_job", "list_jobs", "cancel_job"} <= ids
    assert not [name for name in ids if "__" in name]


def test_a_served_document_validates_against_its_schema(client: TestClient) -> None:
    from qhybrid.api.schemas import JobDocument

    accepted = client.post("/optimize_portfolio", json=valid_request())
    document = client.get(accepted.headers["location"]).json()
    typed = JobDocument.model_validate(document)
    assert typed.request == JobRequest.model_validate({**valid_request(), "privacy": typed.request.privacy})


def test_descriptions_are_markdown_not_restructuredtext(client: TestClient) -> None:
    text = client.get("/openapi.json").text
    assert "``" not in text  # Swagger rendered the docstrings' double backticks literally
    submit = client.get("/openapi.json").json()["paths"]["/optimize_portfolio"]["post"]
    assert "`GET /jobs/{id}`" in submit["description"]
