"""The egress audit log: one hash-chained JSON line per request that leaves the trusted zone.

Each entry records what was sent and how, never the secrets that went with it::

    {seq, time, job_id, destination, method, path, sha256, size,
     tls_version, tls_group, tls_cipher, note, prev, hash}

``sha256`` and ``size`` describe the exact request body bytes (no headers, so no bearer token).
``hash`` is the SHA-256 of the entry's canonical JSON without ``hash``; ``prev`` is the previous
entry's ``hash`` (64 zeros for the first), and ``seq`` counts from 1. Lines are canonical JSON
(sorted keys, no spaces, ASCII), so every byte is covered by the entry's hash.

:func:`verify` finds an altered entry (its hash no longer matches), a removed, inserted or moved
one (``seq``/``prev`` break) and a torn last line. Removing entries from the *end* leaves a valid
shorter chain: detecting that needs an anchor kept elsewhere, such as :attr:`AuditReport.last_hash`
or the entry count, recorded with the job. Whoever can rewrite the whole file can also recompute
the chain; the log is tamper-evident, not tamper-proof.

Appending is safe across threads and processes (``flock`` around reading the last entry and
writing the next) and durable (``fsync`` before :meth:`AuditLog.append` returns). Any failure
raises :class:`AuditWriteError`, and the gateway then sends nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from qhybrid.core.metrics import AUDIT_ENTRIES

#: ``prev`` of the first entry.
GENESIS = "0" * 64

#: The keys of every entry, in no particular order (lines are written with sorted keys).
FIELDS: frozenset[str] = frozenset(
    {
        "seq", "time", "job_id", "destination", "method", "path", "sha256", "size",
        "tls_version", "tls_group", "tls_cipher", "note", "prev", "hash",
    }
)  # fmt: skip

_TAIL_BLOCK = 8192
_MAX_LINE = 1 << 20  # entries are well under 1 KiB; a longer last line is damage


class AuditWriteError(Exception):
    """The audit entry could not be written durably; the request it announces must not be sent."""


class AuditEntry(TypedDict):
    """One line of the audit log (see the module docstring)."""

    seq: int
    time: str
    job_id: str | None
    destination: str
    method: str
    path: str
    sha256: str
    size: int
    tls_version: str | None
    tls_group: str | None
    tls_cipher: str | None
    note: str
    prev: str
    hash: str


@dataclass(frozen=True)
class AuditProblem:
    """One line of the log that does not check out.

    Attributes:
        line: 1-based line number in the file.
        reason: What is wrong with it.
    """

    line: int
    reason: str


@dataclass(frozen=True)
class AuditReport:
    """The result of :func:`verify`.

    Attributes:
        ok: Whether every line checked out.
        entries: Number of lines read (good or bad).
        first_bad_line: Line number of the first problem, if any.
        reason: The first problem, in words, if any.
        problems: Every problem found, in file order (checking resumes after each one).
        last_hash: ``hash`` of the last readable entry (:data:`GENESIS` for an empty log): an
            anchor to store elsewhere, against later removal of entries from the end.
    """

    ok: bool
    entries: int
    first_bad_line: int | None
    reason: str | None
    problems: tuple[AuditProblem, ...] = ()
    last_hash: str = GENESIS


def canonical_json(value: Any) -> str:
    """The one serialisation hashed and written: sorted keys, no whitespace, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def entry_hash(entry: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``entry`` without its ``hash`` key."""
    body = {key: value for key, value in dict(entry).items() if key != "hash"}
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _check_line(raw: bytes) -> tuple[dict[str, Any] | None, list[str]]:
    """Parse one line and check it on its own (fields, canonical form, hash)."""
    try:
        entry = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None, ["not a readable JSON line (altered or torn)"]
    if not isinstance(entry, dict):
        return None, ["not a JSON object"]
    if set(entry) != FIELDS:
        missing, extra = sorted(FIELDS - set(entry)), sorted(set(entry) - FIELDS)
        return None, [f"fields differ (missing {missing}, extra {extra})"]
    if not isinstance(entry["seq"], int) or isinstance(entry["seq"], bool) or not _is_hex64(entry["hash"]):
        return None, ["seq or hash has the wrong type"]
    problems = []
    if canonical_json(entry).encode("ascii") != raw:
        problems.append("not in canonical form (altered)")
    if entry_hash(entry) != entry["hash"]:
        problems.append("hash does not match the entry (altered)")
    return entry, problems


def verify(path: str | os.PathLike[str], *, anchor: str | None = None) -> AuditReport:
    """Check the whole chain of the log at ``path``.

    Args:
        path: The audit log.
        anchor: A ``hash`` recorded elsewhere earlier (``last_hash`` of an earlier check): it must
            still be in the chain. Without it, entries cut from the end leave a valid log.

    Returns:
        The report; ``ok`` is False if the file is missing or unreadable, or any line is bad.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        problem = AuditProblem(0, f"cannot read the audit log: {exc.strerror or exc}")
        return AuditReport(ok=False, entries=0, first_bad_line=0, reason=problem.reason, problems=(problem,))
    pieces = data.split(b"\n")
    torn = pieces.pop()  # b"" when the file ends with a newline, as every complete log does
    problems: list[AuditProblem] = []
    expected_seq: int = 1
    previous_hash: str | None = GENESIS
    last_hash = GENESIS
    anchored = anchor is None or anchor == GENESIS
    for number, raw in enumerate(pieces, start=1):
        entry, reasons = _check_line(raw)
        if entry is not None:
            if entry["seq"] != expected_seq:
                reasons.append(
                    f"seq {entry['seq']}, expected {expected_seq} (entries removed, added or moved)"
                )
            if previous_hash is not None and entry["prev"] != previous_hash:
                reasons.append("prev is not the previous entry's hash (entries removed, added or moved)")
            # Resynchronise on this entry, so one bad line is reported once, not for the rest of the file.
            expected_seq, previous_hash = entry["seq"] + 1, entry["hash"]
            last_hash = entry["hash"]
            anchored = anchored or entry["hash"] == anchor
        else:
            # Its hash is unknown: the next line's prev cannot be judged.
            expected_seq, previous_hash = expected_seq + 1, None
        if reasons:
            problems.append(AuditProblem(number, "; ".join(reasons)))
    entries = len(pieces)
    if torn:
        entries += 1
        problems.append(
            AuditProblem(entries, "the last line is incomplete (no newline: torn write or truncated)")
        )
    if not anchored:
        problems.append(
            AuditProblem(entries, f"the anchor {anchor} is not in the chain (entries removed from the end?)")
        )
    first = problems[0] if problems else None
    return AuditReport(
        ok=not problems,
        entries=entries,
        first_bad_line=first.line if first else None,
        reason=first.reason if first else None,
        problems=tuple(problems),
        last_hash=last_hash,
    )


def _last_entry(descriptor: int, size: int) -> tuple[int, str]:
    """``(seq, hash)`` of the last entry of the open log, checked against its own hash."""
    if size == 0:
        return 0, GENESIS
    if os.pread(descriptor, 1, size - 1) != b"\n":
        raise AuditWriteError("the audit log ends with an incomplete line; run `qhybrid audit verify`")
    # Read backwards from the final newline to the one before it (or to the start of the file).
    position, chunks = size - 1, list[bytes]()
    while True:
        start = max(0, position - _TAIL_BLOCK)
        block = os.pread(descriptor, position - start, start)
        cut = block.rfind(b"\n")
        chunks.insert(0, block[cut + 1 :])
        if cut >= 0 or start == 0:
            break
        if size - start > _MAX_LINE:
            raise AuditWriteError("the last audit entry is implausibly long; run `qhybrid audit verify`")
        position = start
    line = b"".join(chunks)
    entry, problems = _check_line(line)
    if entry is None or problems:
        # Chaining onto a damaged entry would bless it; stop egress until someone looks.
        raise AuditWriteError(
            f"the last audit entry does not check out ({'; '.join(problems)}); run `qhybrid audit verify`"
        )
    return int(entry["seq"]), str(entry["hash"])


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class AuditLog:
    """Appends entries to the hash-chained log at ``path`` (created, mode 0600, on first use).

    Args:
        path: The log file; its directory is created (mode 0700) if missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)

    @property
    def path(self) -> Path:
        """The log file."""
        return self._path

    def __repr__(self) -> str:
        return f"AuditLog({str(self._path)!r})"

    def append(
        self,
        *,
        destination: str,
        method: str,
        path: str,
        body: bytes,
        job_id: str | None = None,
        tls_version: str | None = None,
        tls_group: str | None = None,
        tls_cipher: str | None = None,
        note: str = "",
    ) -> AuditEntry:
        """Write one entry durably and return it.

        Args:
            destination: ``host:port`` the request goes to.
            method: HTTP method (or a label such as ``SDK`` for SDK-made calls).
            path: Request path and query.
            body: The exact request body bytes; only their SHA-256 and size are written.
            job_id: The job the request is made for, if any.
            tls_version: Negotiated TLS version, or a description when it cannot be known.
            tls_group: Negotiated key-exchange group, or a description.
            tls_cipher: Negotiated cipher suite.
            note: Free text (never a secret).

        Returns:
            The entry as written.

        Raises:
            AuditWriteError: If the entry cannot be written and synced, or the log's last entry
                is damaged (nothing is written then).
        """
        try:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AuditWriteError(f"cannot open the audit log {self._path}: {exc}") from exc
        try:
            entry = self._append_locked(
                descriptor,
                {
                    "time": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
                    "job_id": job_id,
                    "destination": destination,
                    "method": method,
                    "path": path,
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "size": len(body),
                    "tls_version": tls_version,
                    "tls_group": tls_group,
                    "tls_cipher": tls_cipher,
                    "note": note,
                },
            )
        except (OSError, AuditWriteError) as exc:
            AUDIT_ENTRIES.labels("failed").inc()
            if isinstance(exc, AuditWriteError):
                raise
            raise AuditWriteError(f"cannot write the audit log {self._path}: {exc}") from exc
        finally:
            os.close(descriptor)  # also releases the lock
        AUDIT_ENTRIES.labels("written").inc()
        return entry

    def _append_locked(self, descriptor: int, fields: dict[str, Any]) -> AuditEntry:
        # Exclusive across processes and threads alike: each open() has its own lock owner.
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        size = os.fstat(descriptor).st_size
        seq, previous = _last_entry(descriptor, size)
        entry: dict[str, Any] = {**fields, "seq": seq + 1, "prev": previous}
        entry["hash"] = entry_hash(entry)
        line = (canonical_json(entry) + "\n").encode("ascii")
        try:
            written = 0
            while written < len(line):
                written += os.write(descriptor, line[written:])
            os.fsync(descriptor)
        except OSError:
            # A torn line would stop every later append: take it back while still holding the lock.
            with contextlib.suppress(OSError):
                os.ftruncate(descriptor, size)
            raise
        if size == 0:
            # A new file only survives a crash once its directory entry is synced too.
            _fsync_directory(self._path.parent)
        result: AuditEntry = {
            "seq": entry["seq"],
            "time": entry["time"],
            "job_id": entry["job_id"],
            "destination": entry["destination"],
            "method": entry["method"],
            "path": entry["path"],
            "sha256": entry["sha256"],
            "size": entry["size"],
            "tls_version": entry["tls_version"],
            "tls_group": entry["tls_group"],
            "tls_cipher": entry["tls_cipher"],
            "note": entry["note"],
            "prev": entry["prev"],
            "hash": entry["hash"],
        }
        return result

    def verify(self) -> AuditReport:
        """Check this log's chain (see :func:`verify`)."""
        return verify(self._path)


def main(argv: Sequence[str] | None = None) -> int:
    """``audit verify --file PATH [--anchor HASH]``: check the chain, print one line per problem.

    Args:
        argv: Arguments after the program name (``sys.argv[1:]`` when ``None``).

    Returns:
        0 if the log is intact, 1 if not (or it cannot be read).
    """
    parser = argparse.ArgumentParser(prog="qhybrid audit", description="Check the egress audit log.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="verify the hash chain")
    # Required: the one caller, `qhybrid audit verify`, resolves the deployment's log itself.
    check.add_argument("--file", type=Path, required=True, help="the log")
    check.add_argument(
        "--anchor", default=None, help="a last hash printed by an earlier check: it must still be there"
    )
    arguments = parser.parse_args(argv)
    path: Path = arguments.file
    report = verify(path, anchor=arguments.anchor)
    for problem in report.problems:
        print(f"{path}:{problem.line}: {problem.reason}")
    if report.ok:
        print(f"{path}: intact, {report.entries} entries, last hash {report.last_hash}")
        return 0
    print(
        f"{path}: NOT intact: {len(report.problems)} problem(s) in {report.entries} entries", file=sys.stderr
    )
    return 1
