"""The dashboard in Debian's chromium, driven by Playwright: a real API, worker and emulated cloud.

The test submits a job, opens the dashboard, types the tenant's key, follows the job from the
list to its page while it runs, and checks that the charts drew this job's data (allocation,
sample histogram, frontier, objectives), that no request left 127.0.0.1, and that the page logged
no error (a Content Security Policy violation would). Screenshots go to ``tmp/artifacts/`` (or
``QHYBRID_TEST_ARTIFACTS``). With ``CI=true`` a missing chromium fails the test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qhybrid.demo import sample_request
from tests.conftest import IN_CI
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("QHYBRID_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(
    os.environ.get("QHYBRID_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "tmp" / "artifacts")
)
KEY = "key-of-desk-7"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium under Playwright (which never downloads a browser of its own here)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium (make test does it as root)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--disable-gpu"])
        yield launched
        launched.close()


def wait_for_job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    # Only to learn the job's data to compare with what the page drew; the page follows the job
    # itself through the event stream.
    for update in _events(http, job_id):
        if update.get("event") == "end":
            break
    document: dict[str, Any] = http.get(f"/jobs/{job_id}").json()
    return document


def _events(http: httpx.Client, job_id: str) -> Iterator[dict[str, str]]:
    with http.stream("GET", f"/jobs/{job_id}/events") as response:
        for line in response.iter_lines():
            if line.startswith("event:"):
                yield {"event": line.split(":", 1)[1].strip()}


@pytest.mark.parametrize("stack_env", ["embedded"], indirect=True)
def test_the_job_page_draws_the_jobs_data_from_this_machine_only(
    start_stack: Callable[..., Stack], browser: Any
) -> None:
    stack = start_stack(queue_delay=1.5, run_delay=0.5, env={"QHYBRID_API_KEYS": f"desk-7:{KEY}"})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    requests: list[str] = []
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
    page = context.new_page()
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=240, trust_env=False) as http:
        accepted = http.post("/optimize_portfolio", json=sample_request())
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]

        # The list asks for the key, then shows the job; a click opens its page while it runs.
        page.goto(f"{stack.api_url}/")
        page.wait_for_selector("#api-key.needed")
        page.fill("#api-key", KEY)
        page.press("#api-key", "Enter")
        page.wait_for_selector(f'tr[data-job="{job_id}"]')
        page.click(f'tr[data-job="{job_id}"] a')
        page.wait_for_selector("#timeline-card")

        document = wait_for_job(http, job_id)
        assert document["status"] == "completed", stack.logs()
        result = document["result"]
        page.wait_for_selector(
            '#summary-card + #timeline-card ol li[data-status="completed"]', timeout=60_000
        )
        page.wait_for_selector("#frontier-chosen", timeout=60_000)

        # The timeline: every transition, in order (it was followed live, by the event stream).
        statuses = page.eval_on_selector_all("#timeline li", "items => items.map(i => i.dataset.status)")
        assert statuses == [event["status"] for event in document["events"]]
        assert page.text_content("#provider-task") and result["quantum"]["task_id"] in page.text_content(
            "#provider-task"
        )

        # Allocation: the job's selected assets.
        drawn = page.eval_on_selector_all(
            "#allocation-chart rect.bar", "bars => bars.map(b => b.dataset.asset)"
        )
        assert sorted(drawn) == sorted(result["selected"])

        # Histogram: the job's most frequent samples, the optimum marked.
        top = result["quantum"]["top_samples"]
        counts = page.eval_on_selector_all(
            "#samples-chart rect", "bars => bars.map(b => Number(b.dataset.count))"
        )
        assert counts == [sample["count"] for sample in top]
        marked = page.eval_on_selector_all(
            "#samples-chart rect.optimum", "bars => bars.map(b => b.dataset.selected)"
        )
        assert marked == [",".join(sample["selected"]) for sample in top if sample["optimum"]]

        # Frontier: 30 points of this universe, the chosen portfolio on it.
        frontier = page.locator("#frontier-chart")
        assert frontier.get_attribute("data-points") == "30"
        assert frontier.get_attribute("data-assets") == ",".join(sample_request()["prices"]["assets"])
        assert page.get_attribute("#frontier-chosen", "data-selected") == ",".join(result["selected"])
        assert page.locator("#frontier-chart circle.asset-dot").count() == 10

        # Objectives: the answer and both baselines; privacy and link.
        objectives = page.eval_on_selector_all(
            "#objective-chart circle", "dots => dots.map(d => [d.dataset.label, Number(d.dataset.objective)])"
        )
        assert ["Answer", result["objective"]] in objectives
        assert any(label.startswith("Exact") for label, _ in objectives)
        assert page.text_content("#privacy-level") == result["quantum"]["privacy"]["level"]
        assert result["quantum"]["link"]["tls_group"] in (page.text_content("#link-group") or "")

        page.screenshot(path=str(ARTIFACTS / "dashboard-job.png"), full_page=True)
        page.goto(f"{stack.api_url}/#/")
        page.wait_for_selector(f'tr[data-job="{job_id}"] .badge.completed')
        page.click('button[data-filter="Failed"]')
        page.wait_for_selector("td.empty")
        page.click('button[data-filter="Completed"]')
        page.wait_for_selector(f'tr[data-job="{job_id}"]')
        page.screenshot(path=str(ARTIFACTS / "dashboard-list.png"))

    # Swagger UI from the wheel: the key goes in a header (a browser cannot add it to a navigation).
    docs_context = browser.new_context(extra_http_headers=headers)
    docs = docs_context.new_page()
    docs.on("request", lambda request: requests.append(request.url))
    docs.goto(f"{stack.api_url}/docs")
    docs.wait_for_selector(".swagger-ui .information-container .title")
    assert "qhybrid" in (docs.text_content(".swagger-ui .information-container .title") or "")
    docs.wait_for_selector("#operations-jobs-get_job_frontier")
    docs.screenshot(path=str(ARTIFACTS / "swagger.png"))
    docs_context.close()
    context.close()

    assert requests, "the browser made no request"
    outside = [url for url in requests if not url.startswith(stack.api_url + "/")]
    assert outside == [], f"requests left the machine: {outside}"
    # The one expected error: the list's first request, sent before the key was typed, got 401.
    unexpected = [text for text in problems if "status of 401" not in text]
    assert unexpected == [], unexpected
    assert len(problems) - len(unexpected) <= 1, problems
