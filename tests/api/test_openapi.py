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
    assert {
        "submit_job",
        "get_job",
        "list_jobs",
        "cancel_job",
        "get_job_result",
        "stream_job_events",
        "get_job_frontier",
    } <= ids
    assert not [name for name in ids if "__" in name]


def test_a_served_document_validates_against_its_schema(client: TestClient) -> None:
    from qhybrid.api.schemas import JobDocument

    accepted = client.post("/optimize_portfolio", json=valid_request())
    document = client.get(accepted.headers["location"], params={"include": "request"}).json()
    typed = JobDocument.model_validate(document)
    assert typed.request is not None
    assert typed.request == JobRequest.model_validate({**valid_request(), "privacy": typed.request.privacy})


def test_descriptions_are_markdown_not_restructuredtext(client: TestClient) -> None:
    text = client.get("/openapi.json").text
    assert "``" not in text  # Swagger rendered the docstrings' double backticks literally
    submit = client.get("/openapi.json").json()["paths"]["/optimize_portfolio"]["post"]
    assert "`GET /jobs/{id}`" in submit["description"]


def test_the_new_routes_are_documented(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    result = paths["/jobs/{job_id}/result"]["get"]
    ok = result["responses"]["200"]["content"]["application/json"]["schema"]
    assert _resolve(spec, ok)["title"] == "JobResult"
    assert "409" in result["responses"]
    events = paths["/jobs/{job_id}/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    assert any(p["name"] == "Last-Event-ID" for p in events["parameters"])
    frontier = paths["/jobs/{job_id}/frontier"]["get"]["responses"]["200"]["content"]["application/json"]
    assert {"assets", "points", "chosen"} <= set(_resolve(spec, frontier["schema"])["properties"])
    assert "Retry-After" in paths["/jobs/{job_id}"]["get"]["responses"]["200"]["headers"]
    assert "Retry-After" in paths["/optimize_portfolio"]["post"]["responses"]["202"]["headers"]
    status = next(p for p in paths["/jobs"]["get"]["parameters"] if p["name"] == "status")
    assert _resolve(spec, status["schema"])["type"] == "array"
    include = next(p for p in paths["/jobs/{job_id}"]["get"]["parameters"] if p["name"] == "include")
    item = _resolve(spec, include["schema"])["items"]
    assert item.get("enum", [item.get("const")]) == ["request"]
    summary = spec["components"]["schemas"]["JobSummary"]["properties"]
    assert "selected" in summary
