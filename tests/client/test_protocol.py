"""Following a job: every event once and in order, whatever the polls happen to see; outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from qhybrid.client import (
    ClassicalFallbackError,
    JobCancelledError,
    JobDocument,
    JobFailedError,
    JobState,
    result_of,
)
from qhybrid.client._protocol import Pacing, Tracker

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
JOURNEY = ["accepted", "preparing", "submitting", "submitted", "remote_queued", "remote_running"]


def document(statuses: list[str], **fields: Any) -> JobDocument:
    """A job document whose events are ``statuses`` (one second apart)."""
    events = [
        {
            "at": (T0 + timedelta(seconds=i)).isoformat(),
            "from_status": statuses[i - 1] if i else None,
            "status": status,
            "detail": None,
        }
        for i, status in enumerate(statuses)
    ]
    data = {
        "job_id": "job-1",
        "status": statuses[-1],
        "backend": "emulated-cloud",
        "shots": 100,
        "created_at": T0.isoformat(),
        "updated_at": (T0 + timedelta(seconds=len(statuses))).isoformat(),
        "events": events,
        **fields,
    }
    return JobDocument.from_json(data)


def test_every_event_is_reported_once_in_order_even_between_polls() -> None:
    tracker = Tracker()
    # The polls saw accepted, then submitted (preparing and submitting passed in between), then
    # the same document again, then remote_running (remote_queued passed in between).
    seen: list[str] = []
    updates = 0
    for length in (1, 4, 4, 6):
        update = tracker.update(document(JOURNEY[:length]))
        if update is not None:
            updates += 1
            seen += [event.status.api_name for event in update.events]
    assert seen == JOURNEY
    assert updates == 3  # the unchanged document brought nothing


def test_a_new_retry_is_reported_once() -> None:
    tracker = Tracker()
    first = tracker.update(document(JOURNEY[:2], last_error="TransientError: certificate verify failed"))
    again = tracker.update(
        document(JOURNEY[:2], last_error="TransientError: certificate verify failed", attempt=1)
    )
    assert first is not None and first.retrying == "TransientError: certificate verify failed"
    assert again is None


def result_json(source: str, reason: str | None = None) -> dict[str, Any]:
    portfolio = {"selected": ["A"], "bits": [1, 0], "expected_return": 0.1, "variance": 0.2, "objective": 0.0}
    baseline = {**portfolio, "method": "brute_force", "optimal": True, "seconds": 0.0}
    result: dict[str, Any] = {
        **portfolio,
        "source": source,
        "found_by": "brute_force",
        "classical": baseline,
        "baselines": {"exact": baseline, "simulated_annealing": baseline},
        "gap": 0.0,
        "gap_abs": 0.0,
        "quantum_best": None,
        "refined": None,
        "quantum": None,
        "estimate": None,
    }
    if reason is not None:
        result["fallback"] = {"reason": reason}
    return result


def test_outcomes() -> None:
    done = document([*JOURNEY, "finalizing", "completed"], result=result_json("quantum"))
    assert result_of(done, require_quantum=True).selected == ["A"]
    fallback = document(
        ["accepted", "preparing", "finalizing", "completed"],
        result=result_json("classical_fallback", "provider task t failed"),
    )
    assert result_of(fallback).source == "classical_fallback"  # not asked for: an answer
    with pytest.raises(ClassicalFallbackError, match="provider task t failed") as caught:
        result_of(fallback, require_quantum=True)
    assert caught.value.job.result is not None  # the classical answer is still there
    with pytest.raises(JobFailedError, match="no QPU"):
        result_of(document(["accepted", "failed"], error="no QPU"))
    with pytest.raises(JobCancelledError):
        result_of(document(["accepted", "cancelled"]))


def test_the_document_keeps_what_the_api_sent() -> None:
    job = document(JOURNEY[:1], selected_later="a field from a newer API")
    assert job.raw["selected_later"] == "a field from a newer API"
    assert job.model_dump()["selected_later"] == "a field from a newer API"
    assert job.status is JobState.ACCEPTED and not job.finished


def test_polling_backs_off_while_nothing_changes_and_starts_over_on_a_change() -> None:
    pacing = Pacing(0.1, 0.5)
    job = document(JOURNEY[:2])
    interval, seen = pacing.next(pacing.initial, None, job)
    pauses = [interval]
    for _ in range(4):
        interval, seen = pacing.next(interval, seen, job)
        pauses.append(interval)
    interval, seen = pacing.next(interval, seen, document(JOURNEY[:3]))
    assert pauses == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert interval == 0.1
    with pytest.raises(ValueError, match="initial <= maximum"):
        Pacing(1.0, 0.5)


def test_the_event_parser_reads_messages_and_skips_heartbeats() -> None:
    from qhybrid.client._protocol import EventParser, ServerEvent

    parser = EventParser()
    lines = [
        "retry: 1000",
        "",
        ": heartbeat",
        "",
        "id: 7",
        "event: transition",
        'data: {"a":',
        "data: 1}",
        "",
    ]
    messages = [message for line in lines if (message := parser.feed(line)) is not None]
    assert messages == [ServerEvent("transition", '{"a":\n1}', "7")]
    assert parser.feed("data:x") is None and parser.feed("") == ServerEvent("message", "x", None)
