"""The request contract: defaults written once, and stored documents of every version readable."""

from __future__ import annotations

from typing import Any

import pytest

from qhybrid.domain.request import (
    DEFAULT_BACKEND,
    REQUEST_VERSION,
    JobRequest,
    load_stored_request,
    upgrade_stored_request,
)

BODY: dict[str, Any] = {
    "assets": [{"name": "A", "expected_return": 0.01}, {"name": "B", "expected_return": 0.02}],
    "covariance": [[0.1, 0.0], [0.0, 0.2]],
    "budget": 1,
}


def test_every_default_comes_from_the_model() -> None:
    request = JobRequest.model_validate(BODY)
    assert request.backend == DEFAULT_BACKEND == "emulated-cloud"
    assert request.options.maxiter == 100
    assert request.options.mixer == "auto"
    assert request.risk_aversion == 0.5
    assert request.lot_range("A") == (0, request.max_lots)


def test_a_version_1_document_loads_with_todays_defaults() -> None:
    old = {**BODY, "privacy": None, "options": {"maxiter": None, "seed": 4}}
    with pytest.raises(ValueError, match="maxiter"):
        JobRequest.model_validate(old)  # the current contract refuses a null maxiter
    request = load_stored_request(old, 1)
    assert request.options.maxiter == 100
    assert request.options.seed == 4
    assert request.privacy is None


def test_the_current_version_is_read_as_it_is() -> None:
    body = JobRequest.model_validate(BODY).model_dump(mode="json")
    assert upgrade_stored_request(body, REQUEST_VERSION) is body
    assert load_stored_request(body, REQUEST_VERSION) == JobRequest.model_validate(BODY)


def test_a_newer_version_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=f"version {REQUEST_VERSION + 1} is newer"):
        load_stored_request(BODY, REQUEST_VERSION + 1)
