"""Egress policy for the providers' SDKs, as far as each SDK lets us in.

The Braket SDK (botocore) and qiskit-ibm-runtime (requests) open their own connections with
Python's ``ssl`` module, bound here to the system OpenSSL 3.0, which has no ML-KEM: those links are
classical TLS, and no hook changes that. What the gateway can still do:

* botocore emits ``before-send`` with the final request: :func:`attach_botocore` checks the host
  against the allow-list and writes the audit entry of the exact body bytes before botocore sends
  them, refusing the call when either fails;
* qiskit-ibm-runtime has no such hook: :func:`audit_sdk_submission` records our program bytes
  just before the SDK call, labelled as SDK-serialised (the bytes on the wire are the SDK's own
  encoding of that program, which we cannot see).

The audit entries say which TLS this is, and never claim more than the stdlib can do.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from qhybrid.gateway.audit import AuditEntry, AuditLog, AuditWriteError
from qhybrid.gateway.context import get_current_job
from qhybrid.gateway.egress import EgressAuditError, EgressPolicyError, destination_of

#: botocore handler id: attaching twice to the same emitter registers one handler, not two.
BOTOCORE_HANDLER_ID = "qhybrid-egress-policy"

_SDK_NOTE = "SDK-serialised; classical TLS via requests"


def stdlib_tls_labels(library: str) -> tuple[str, str]:
    """What the audit can truthfully say about a link made with Python's ``ssl`` module.

    Args:
        library: The HTTP library the SDK uses (``botocore``, ``requests``).

    Returns:
        ``(tls_version, tls_group)`` descriptions: the stdlib cannot report the negotiated group,
        and before OpenSSL 3.5 it cannot have been a post-quantum one.
    """
    major, minor = ssl.OPENSSL_VERSION_INFO[:2]
    version = f"TLS ({library}, stdlib ssl / OpenSSL {major}.{minor})"
    if (major, minor) < (3, 5):
        return version, "classical (no ML-KEM in stdlib ssl)"
    # OpenSSL 3.5+ offers X25519MLKEM768 by default, but the stdlib cannot tell what was agreed.
    return version, "unknown (stdlib ssl cannot report the group)"


def _body_bytes(body: Any) -> bytes:
    """The exact bytes botocore is about to send."""
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    if hasattr(body, "read") and hasattr(body, "seek") and hasattr(body, "tell"):
        # A seekable stream (uploads): read it for the hash, then put it back where it was.
        position = body.tell()
        try:
            data = body.read()
        finally:
            body.seek(position)
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)
    # What cannot be read cannot be audited, and what is not audited is not sent.
    raise EgressPolicyError(f"cannot audit an SDK request body of type {type(body).__name__}; not sent")


def _emitters_of(target: Any) -> list[Any]:
    """The event emitters to hook: of a client, a boto3/botocore session, or a Braket ``AwsSession``."""
    if hasattr(target, "braket_client") and hasattr(target, "boto_session"):
        # Braket's AwsSession: its Braket client exists already (it copied the session's handlers
        # when made); clients it makes later (S3 for results...) come from the boto3 session.
        return [*_emitters_of(target.braket_client), *_emitters_of(target.boto_session)]
    meta = getattr(target, "meta", None)
    if meta is not None and hasattr(meta, "events"):
        return [meta.events]  # a client
    if hasattr(target, "events"):
        return [target.events]  # boto3.Session: clients made afterwards inherit its handlers
    if hasattr(target, "get_component"):
        return [target.get_component("event_emitter")]  # botocore.session.Session
    raise TypeError(
        f"{type(target).__name__} is neither a botocore client, a boto3/botocore session nor an AwsSession"
    )


def attach_botocore(
    client_or_session: Any,
    *,
    allowed: Iterable[str],
    audit: AuditLog,
    job_id_getter: Callable[[], str | None] = get_current_job,
    allow_plaintext: bool = False,
) -> Callable[..., None]:
    """Check and audit every request a botocore client (or a session's future clients) sends.

    Register on a session *before* its clients are created (boto3 copies the session's handlers
    into each new client), on each client directly, or on a Braket ``AwsSession`` (its Braket
    client and its boto3 session). Attaching twice is a no-op. Not covered: sessions Braket makes
    on its own with ``AwsSession.copy_session`` (a device in another region than the session's,
    task batches), and the credential providers' own calls (STS, SSO, instance metadata).

    Args:
        client_or_session: A botocore/boto3 client, a ``boto3.Session``, a botocore session or a
            ``braket.aws.AwsSession``.
        allowed: ``host:port`` pairs (or URLs) the SDK may reach.
        audit: The audit log every request is written to before it is sent.
        job_id_getter: Returns the job the current call serves (the worker's context by default).
        allow_plaintext: Let ``http://`` endpoints through (tests and local emulators only).

    Returns:
        The handler, e.g. to unregister it.

    Raises:
        TypeError: If ``client_or_session`` has no botocore event system.
    """
    permitted = frozenset(a if "://" not in a else destination_of(a) for a in allowed)
    tls_version, tls_group = stdlib_tls_labels("botocore")

    def before_send(request: Any, event_name: str = "before-send", **_: Any) -> None:
        # Raising here stops botocore before its HTTP layer: nothing reaches the network. Our
        # exceptions are not botocore's retryable ones, so they surface at once.
        url = str(request.url)
        destination = destination_of(url)
        if destination not in permitted:
            raise EgressPolicyError(f"SDK egress to {destination} is not on the allow-list")
        parts = urlsplit(url)
        plaintext = parts.scheme == "http"
        if plaintext and not allow_plaintext:
            raise EgressPolicyError(f"plain http SDK egress to {destination} refused: https only")
        operation = event_name.removeprefix("before-send.")
        try:
            audit.append(
                destination=destination,
                method=str(request.method).upper(),
                path=parts.path + (f"?{parts.query}" if parts.query else ""),
                body=_body_bytes(request.body),
                job_id=job_id_getter(),
                tls_version=None if plaintext else tls_version,
                tls_group=None if plaintext else tls_group,
                tls_cipher=None,
                note=f"botocore {operation}" + ("; plaintext http (development only)" if plaintext else ""),
            )
        except AuditWriteError as exc:
            raise EgressAuditError(
                f"egress audit failed, SDK request to {destination} not sent: {exc}"
            ) from exc

    for emitter in _emitters_of(client_or_session):
        emitter.register("before-send", before_send, unique_id=BOTOCORE_HANDLER_ID)
    return before_send


def audit_sdk_submission(
    audit: AuditLog,
    *,
    destination: str,
    payload: bytes,
    job_id: str | None,
    note: str = "",
) -> AuditEntry:
    """Record a submission an SDK is about to make on its own connection (no hook available).

    Call it right before the SDK call, and do not make the call if it raises.

    Args:
        audit: The audit log.
        destination: ``host:port`` (or URL) the SDK will contact.
        payload: Our program bytes as handed to the SDK (the SDK serialises them its own way).
        job_id: The job the submission serves.
        note: What the call is, e.g. ``"qiskit-ibm-runtime SamplerV2.run"``.

    Returns:
        The entry written.

    Raises:
        EgressAuditError: If the entry cannot be written.
    """
    target = destination_of(destination) if "://" in destination else destination
    tls_version, tls_group = stdlib_tls_labels("requests")
    try:
        return audit.append(
            destination=target,
            method="SDK",
            path="",
            body=payload,
            job_id=job_id,
            tls_version=tls_version,
            tls_group=tls_group,
            tls_cipher=None,
            note=f"{note}; {_SDK_NOTE}" if note else _SDK_NOTE,
        )
    except AuditWriteError as exc:
        raise EgressAuditError(f"egress audit failed, SDK submission to {target} not made: {exc}") from exc
