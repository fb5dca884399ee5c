"""The hash-chained audit log: appends, verification, tampering, concurrency, failures."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from qhybrid.gateway.audit import (
    FIELDS,
    GENESIS,
    AuditLog,
    AuditWriteError,
    canonical_json,
    entry_hash,
    main,
    verify,
)


def fill(path: Path, count: int) -> AuditLog:
    log = AuditLog(path)
    for i in range(count):
        log.append(
            destination="127.0.0.1:8780",
            method="POST" if i % 2 else "GET",
            path=f"/v1/tasks/{i}",
            body=f"body {i}".encode(),
            job_id=f"job-{i}",
            tls_version="TLSv1.3",
            tls_group="X25519MLKEM768",
            tls_cipher="TLS_AES_256_GCM_SHA384",
            note="test",
        )
    return log


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_append_writes_a_chained_canonical_entry(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit" / "egress.log")
    first = log.append(destination="h:443", method="POST", path="/v1/tasks", body=b'{"a":1}', job_id="j1")
    second = log.append(destination="h:443", method="GET", path="/v1/tasks/x", body=b"")
    assert set(first) == FIELDS
    assert (first["seq"], first["prev"]) == (1, GENESIS)
    assert (second["seq"], second["prev"]) == (2, first["hash"])
    assert first["sha256"] == hashlib.sha256(b'{"a":1}').hexdigest()
    assert first["size"] == 7
    assert second["sha256"] == hashlib.sha256(b"").hexdigest()
    assert second["size"] == 0
    assert second["job_id"] is None
    assert first["hash"] == entry_hash(first)
    raw = lines_of(log.path)
    assert raw == [(canonical_json(first) + "\n").encode(), (canonical_json(second) + "\n").encode()]
    assert log.path.stat().st_mode & 0o777 == 0o600
    assert log.path.parent.stat().st_mode & 0o777 == 0o700
    report = log.verify()
    assert (report.ok, report.entries, report.first_bad_line, report.reason) == (True, 2, None, None)
    assert report.last_hash == second["hash"]


def test_no_body_bytes_or_headers_are_written(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "egress.log")
    log.append(destination="h:443", method="POST", path="/v1/tasks", body=b"SECRET-PROGRAM-TEXT")
    assert b"SECRET" not in log.path.read_bytes()


def test_empty_and_missing_logs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert verify(empty).ok
    assert verify(empty).entries == 0
    missing = verify(tmp_path / "missing.log")
    assert not missing.ok
    assert "cannot read" in (missing.reason or "")


@pytest.mark.parametrize("line", [1, 3, 5])
def test_every_flipped_byte_of_a_line_is_detected_at_that_line(tmp_path: Path, line: int) -> None:
    path = tmp_path / "egress.log"
    fill(path, 5)
    original = path.read_bytes()
    start = sum(len(raw) for raw in lines_of(path)[: line - 1])
    length = len(lines_of(path)[line - 1])
    for offset in range(start, start + length):
        data = bytearray(original)
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))
        report = verify(path)
        # Including the newline: flipped, it merges this line with the next, still reported here.
        assert not report.ok, f"flip at byte {offset} undetected"
        assert report.first_bad_line == line, (offset, report)


def test_removed_line_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "egress.log"
    fill(path, 5)
    raw = lines_of(path)
    path.write_bytes(b"".join(raw[:2] + raw[3:]))
    report = verify(path)
    assert (report.ok, report.first_bad_line) == (False, 3)
    assert "expected 3" in (report.reason or "")
    assert len(report.problems) == 1  # checking resumes after the gap


def test_removed_first_line_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "egress.log"
    fill(path, 3)
    path.write_bytes(b"".join(lines_of(path)[1:]))
    assert verify(path).first_bad_line == 1


def test_swapped_lines_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "egress.log"
    fill(path, 5)
    raw = lines_of(path)
    raw[1], raw[2] = raw[2], raw[1]
    path.write_bytes(b"".join(raw))
    report = verify(path)
    assert (report.ok, report.first_bad_line) == (False, 2)


def test_truncated_last_line_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "egress.log"
    fill(path, 4)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    report = verify(path)
    assert (report.ok, report.first_bad_line, report.entries) == (False, 4, 4)
    assert "incomplete" in (report.reason or "")
    # and nothing is chained onto a torn tail
    with pytest.raises(AuditWriteError, match="incomplete"):
        AuditLog(path).append(destination="h:443", method="GET", path="/", body=b"")
    assert path.read_bytes() == data[: len(data) - 20]


def test_recomputed_but_unchained_forgery_is_detected(tmp_path: Path) -> None:
    # An attacker rewrites an entry and fixes its own hash: the next entry's prev still breaks.
    path = tmp_path / "egress.log"
    fill(path, 3)
    raw = lines_of(path)
    entry = json.loads(raw[1])
    entry["destination"] = "evil.example:443"
    entry["hash"] = entry_hash(entry)
    raw[1] = (canonical_json(entry) + "\n").encode()
    path.write_bytes(b"".join(raw))
    assert verify(path).first_bad_line == 3


def test_append_refuses_to_chain_onto_an_altered_last_entry(tmp_path: Path) -> None:
    path = tmp_path / "egress.log"
    fill(path, 2)
    data = path.read_bytes().replace(b"/v1/tasks/1", b"/v1/tasks/9")
    path.write_bytes(data)
    with pytest.raises(AuditWriteError, match="does not check out"):
        AuditLog(path).append(destination="h:443", method="GET", path="/", body=b"")
    assert path.read_bytes() == data


def _append_many(path: str, worker: int, count: int) -> None:
    log = AuditLog(path)
    for i in range(count):
        log.append(destination="h:443", method="POST", path=f"/w{worker}/{i}", body=os.urandom(32))


def test_concurrent_appends_from_processes_stay_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "egress.log"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(path), w, 40)) for w in range(4)]
    for worker in workers:
        worker.start()
    _append_many(str(path), 99, 40)  # and this process at the same time
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    report = verify(path)
    assert report.ok, report.problems
    assert report.entries == 200
    seqs = [json.loads(raw)["seq"] for raw in lines_of(path)]
    assert seqs == list(range(1, 201))


def test_directory_in_place_of_the_file_fails(tmp_path: Path) -> None:
    (tmp_path / "egress.log").mkdir()
    with pytest.raises(AuditWriteError, match="cannot open"):
        AuditLog(tmp_path / "egress.log").append(destination="h:443", method="GET", path="/", body=b"")


def test_parent_that_is_a_file_fails(tmp_path: Path) -> None:
    (tmp_path / "audit").write_text("not a directory")
    with pytest.raises(AuditWriteError):
        AuditLog(tmp_path / "audit" / "egress.log").append(
            destination="h:443", method="GET", path="/", body=b""
        )


def test_full_disk_fails() -> None:
    # /dev/full refuses every write with ENOSPC, even for root: the disk-full case.
    with pytest.raises(AuditWriteError, match="No space left"):
        AuditLog("/dev/full").append(destination="h:443", method="GET", path="/", body=b"")


def test_cli_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "egress.log"
    fill(path, 3)
    assert main(["verify", "--file", str(path)]) == 0
    assert "intact, 3 entries" in capsys.readouterr().out
    raw = lines_of(path)
    path.write_bytes(raw[0] + raw[2])
    assert main(["verify", "--file", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert out[0].startswith(f"{path}:2: ")


def test_entries_cut_from_the_end_are_found_with_an_anchor(tmp_path: Path) -> None:
    path = tmp_path / "egress.log"
    fill(path, 4)
    anchor = verify(path).last_hash
    assert verify(path, anchor=anchor).ok
    raw = lines_of(path)
    path.write_bytes(b"".join(raw[:3]))
    # Without the anchor the shorter chain is valid: this is the limit the anchor closes.
    assert verify(path).ok
    report = verify(path, anchor=anchor)
    assert (report.ok, report.first_bad_line) == (False, 3)
    assert "anchor" in (report.reason or "")
    assert main(["verify", "--file", str(path), "--anchor", anchor]) == 1
    # An older anchor still in the chain is fine, and so is the empty log's.
    assert verify(path, anchor=json.loads(raw[1])["hash"]).ok
    assert verify(path, anchor="0" * 64).ok
