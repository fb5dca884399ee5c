"""The providers' SDKs under the same policy as the gateway's own client.

The Braket SDK (botocore) and qiskit-ibm-runtime (``requests``) open their own connections with
Python's ``ssl`` module, bound here to the system OpenSSL 3.0, which has no ML-KEM: those links are
classical TLS, and no hook changes that. Everything else about them is the gateway's:

* **botocore** emits ``before-send`` with the final request. :func:`attach_botocore` checks the
  host against the allow-list (never the instance metadata address), the operation against the
  provider's route table (:func:`braket_routes`: device and task ARNs in the configured region,
  the configured bucket and prefix, a client token the gateway minted, declared body keys), and
  writes the audit entry of the exact body bytes before botocore sends them, refusing the call
  when any of it fails. :class:`HookedAwsSession` keeps the hook on the sessions Braket copies
  (``copy_session``) and turns the instance metadata service off unless configured.
* **requests** (qiskit-ibm-runtime, and IBM's cloud SDK that signs in and finds the instance) has
  no event system, so :func:`install_requests_guard` wraps the one method every ``requests``
  transport goes through, ``HTTPAdapter.send``, for the whole process: every request passes the
  allow-list, the route table (:func:`ibm_routes`: IAM sign-in, instance search, device, jobs
  by the gateway's tag, status, results, cancel), a header policy (only declared headers, the
  configured credential, no library fingerprints) and the audit, before a socket is opened.
  Requests the SDK retries inside urllib3 (a dropped connection, a 5xx) go out again under the
  one audit entry of the call.
* :func:`self_test` runs when a worker starts: it sends a request to a refused destination
  through each hook (a local socket that must see no connection) and replays httpcore's trace
  events on an in-memory stream, and raises :class:`SdkHookError` if any hook did not fire or a
  dependency changed what the gateway relies on, so the worker does not start.

The audit entries say which TLS this is, and never claim more than the stdlib can do.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from qhybrid.gateway.audit import AuditEntry, AuditLog, AuditWriteError
from qhybrid.gateway.context import get_current_job
from qhybrid.gateway.egress import EgressAuditError, EgressPolicyError, destination_of
from qhybrid.gateway.payload import PayloadError, check_token
from qhybrid.gateway.routes import Route, RouteError, RouteTable, matches
from qhybrid.gateway.tokens import TokenMinter

#: botocore handler id: attaching twice to the same emitter registers one handler, not two.
BOTOCORE_HANDLER_ID = "qhybrid-egress-policy"

#: The tag that carries the client token on every Braket task (``SearchQuantumTasks`` finds it).
BRAKET_TOKEN_TAG = "qhybrid-client-token"  # noqa: S105 - a tag key, not a secret
#: The tag on every IBM job we submit, and the prefix of the tag that carries the client token.
IBM_JOB_TAG = "qhybrid"
IBM_TOKEN_TAG_PREFIX = "qhybrid-token:"  # noqa: S105 - a tag prefix, not a secret

_SDK_NOTE = "SDK-serialised; classical TLS via requests"
#: Sent instead of the SDKs' own User-Agent (library, OS and Python versions).
SDK_USER_AGENT = "qhybrid-egress"


class SdkHookError(RuntimeError):
    """A hook the SDK egress policy relies on did not fire: the process must not start."""


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
    """The exact bytes an SDK is about to send."""
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


def refuse_instance_metadata(host: str) -> None:
    """Refuse the cloud instance metadata services (169.254.0.0/16, ``fd00:ec2::254``).

    They hand out credentials, and a request to them is never part of a provider's API.

    Raises:
        EgressPolicyError: If ``host`` is one of them.
    """
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    if address.is_link_local or address == ipaddress.ip_address("fd00:ec2::254"):
        raise EgressPolicyError(f"SDK egress to {host} (instance metadata) is refused")


def _permitted(allowed: Iterable[str]) -> frozenset[str]:
    return frozenset(a if "://" not in a else destination_of(a) for a in allowed)


# --------------------------------------------------------------------------------------- botocore

#: Checks one botocore request (``AWSPreparedRequest``: ``method``, ``url``, ``body``).
OperationCheck = Callable[[Any], None]


@dataclass(frozen=True)
class BotocoreRoutes:
    """The operations an AWS SDK client may call, by ``service.Operation``, each with its check."""

    operations: Mapping[str, OperationCheck]


#: ``arn:aws:braket:<region>::device/<qpu|quantum-simulator>/<provider>/<name>``; the managed
#: simulators have no region in their ARN.
BRAKET_DEVICE_ARN = re.compile(
    r"arn:aws:braket:(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]|)::device/"
    r"(?P<kind>qpu|quantum-simulator)/(?P<provider>[a-z0-9-]{1,32})/(?P<name>[A-Za-z0-9._-]{1,64})"
)
#: ``arn:aws:braket:<region>:<account>:quantum-task/<uuid>``.
BRAKET_TASK_ARN = re.compile(
    r"arn:aws:braket:(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]):[0-9]{12}:quantum-task/[0-9a-f-]{36}"
)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: Braket's idempotency token for cancellation is made by botocore (a UUID), not by us.
_CREATE_KEYS = frozenset(
    {"action", "deviceArn", "outputS3Bucket", "outputS3KeyPrefix", "shots", "clientToken", "tags"}
)
_CREATE_OPTIONAL = frozenset({"deviceParameters"})
_NUMBER_LITERAL = re.compile(r"(?<![\w.\]\[$])-?[0-9]+\.[0-9]+(?:e[+-]?[0-9]+)?")


def check_braket_device_arn(arn: str, region: str) -> str:
    """``arn`` if it is a well-formed Braket device ARN in ``region`` (or region-less).

    Raises:
        ValueError: Naming the rule broken.
    """
    match = BRAKET_DEVICE_ARN.fullmatch(arn)
    if match is None:
        raise ValueError(
            f"{arn!r} is not a Braket device ARN (arn:aws:braket:<region>::device/<qpu|quantum-simulator>/"
            "<provider>/<name>)"
        )
    if match.group("region") not in ("", region):
        raise ValueError(
            f"device {arn} is in region {match.group('region')}, "
            f"not the configured {region} (QHYBRID_AWS_REGION)"
        )
    return arn


def _json_body(request: Any) -> dict[str, Any]:
    try:
        document = json.loads(_body_bytes(request.body) or b"{}")
    except ValueError as exc:
        raise RouteError("body", "the body is not JSON") from exc
    if not isinstance(document, dict):
        raise RouteError("body", "the body is not a JSON object")
    return document


def _path_of(request: Any) -> tuple[str, list[tuple[str, str]]]:
    parts = urlsplit(str(request.url))
    return parts.path, parse_qsl(parts.query, keep_blank_values=True)


def braket_routes(
    *, region: str, bucket: str, prefix: str, tokens: TokenMinter | None, max_shots: int = 100_000
) -> BotocoreRoutes:
    """What the Braket adapter may ask of AWS, in the operator's region, bucket and prefix.

    Args:
        region: ``QHYBRID_AWS_REGION``.
        bucket: ``QHYBRID_BRAKET_S3_BUCKET``.
        prefix: ``QHYBRID_BRAKET_S3_PREFIX``.
        tokens: The gateway's minter: a task's client token (and its tag) must be one it minted.
        max_shots: Largest shot count.

    Returns:
        GetDevice, CreateQuantumTask, GetQuantumTask, SearchQuantumTasks, CancelQuantumTask and
        S3 GetObject under the prefix.
    """

    def device_in_path(request: Any) -> None:
        path, query = _path_of(request)
        if query or not path.startswith("/device/"):
            raise RouteError("route", "GetDevice takes /device/<arn> and no query")
        check_braket_device_arn(unquote(path.removeprefix("/device/")), region)

    def task_in_path(suffix: str, query_allowed: Mapping[str, str]) -> OperationCheck:
        def check(request: Any) -> None:
            path, query = _path_of(request)
            if not (path.startswith("/quantum-task/") and path.endswith(suffix)):
                raise RouteError("route", f"expected /quantum-task/<arn>{suffix}")
            arn = unquote(path.removeprefix("/quantum-task/").removesuffix(suffix))
            match = BRAKET_TASK_ARN.fullmatch(arn)
            if match is None or match.group("region") != region:
                raise RouteError("route", f"{arn!r} is not a quantum task ARN in {region}")
            for key, value in query:
                if query_allowed.get(key) != value:
                    raise RouteError("query", f"query {key} is not declared")

        return check

    def create(request: Any) -> None:
        body = _json_body(request)
        keys = set(body)
        if not _CREATE_KEYS <= keys <= _CREATE_KEYS | _CREATE_OPTIONAL:
            raise RouteError("body", f"CreateQuantumTask keys {sorted(keys)} are not the declared ones")
        check_braket_device_arn(str(body["deviceArn"]), region)
        if (body["outputS3Bucket"], body["outputS3KeyPrefix"]) != (bucket, prefix):
            raise RouteError("body", "results must go to the configured bucket and prefix")
        shots = body["shots"]
        if not isinstance(shots, int) or isinstance(shots, bool) or not 1 <= shots <= max_shots:
            raise RouteError("body", f"shots must be an integer from 1 to {max_shots}")
        try:
            token = check_token(body["clientToken"], tokens)
        except PayloadError as exc:
            raise RouteError("body", str(exc)) from exc
        if body["tags"] != {BRAKET_TOKEN_TAG: token}:
            raise RouteError("body", f"tags must be exactly {{{BRAKET_TOKEN_TAG}: <client token>}}")
        _check_braket_action(body["action"])

    def search(request: Any) -> None:
        body = _json_body(request)
        if not {"filters", "maxResults"} <= set(body) <= {"filters", "maxResults", "nextToken"}:
            raise RouteError("body", "SearchQuantumTasks takes filters, maxResults, nextToken")
        filters = body["filters"]
        if not (
            isinstance(filters, list)
            and len(filters) == 1
            and isinstance(filters[0], dict)
            and set(filters[0]) == {"name", "operator", "values"}
            and (filters[0]["name"], filters[0]["operator"]) == ("deviceArn", "EQUAL")
            and isinstance(filters[0]["values"], list)
            and len(filters[0]["values"]) == 1
        ):
            raise RouteError("body", "SearchQuantumTasks filters on one device ARN only")
        check_braket_device_arn(str(filters[0]["values"][0]), region)
        if "nextToken" in body and not re.fullmatch(r"[A-Za-z0-9+/=_.-]{1,4096}", str(body["nextToken"])):
            raise RouteError("body", "nextToken is not a page token")

    def cancel(request: Any) -> None:
        task_in_path("/cancel", {})(request)
        body = _json_body(request)
        if set(body) - {"clientToken"} or not _UUID.fullmatch(str(body.get("clientToken", "0" * 8))):
            raise RouteError("body", "CancelQuantumTask takes botocore's idempotency token only")

    def get_object(request: Any) -> None:
        host = urlsplit(str(request.url)).hostname or ""
        path, query = _path_of(request)
        key = unquote(path.lstrip("/"))
        if not host.startswith(f"{bucket}."):  # path-style: /<bucket>/<key>
            first, _, key = key.partition("/")
            if first != bucket:
                raise RouteError("route", f"S3 reads only from the configured bucket {bucket}")
        if not key.startswith(f"{prefix}/") or not key.endswith("/results.json") or ".." in key:
            raise RouteError("route", f"S3 reads only <prefix>/.../results.json under {prefix}/")
        if any((k, v) != ("x-id", "GetObject") for k, v in query):
            raise RouteError("query", "GetObject takes no query")

    def no_body(check: OperationCheck) -> OperationCheck:
        def checked(request: Any) -> None:
            check(request)
            if _body_bytes(request.body):
                raise RouteError("body", "this operation takes no body")

        return checked

    return BotocoreRoutes(
        {
            "braket.GetDevice": no_body(device_in_path),
            "braket.CreateQuantumTask": create,
            "braket.GetQuantumTask": no_body(task_in_path("", {"additionalAttributeNames": "QueueInfo"})),
            "braket.SearchQuantumTasks": search,
            "braket.CancelQuantumTask": cancel,
            "s3.GetObject": no_body(get_object),
        }
    )


def _check_braket_action(action: Any) -> None:
    """The converted program: an OpenQASM action whose every angle is still on the gateway's grid."""
    try:
        document = json.loads(action) if isinstance(action, str) else None
    except ValueError:
        document = None
    if not isinstance(document, dict) or set(document) - {"braketSchemaHeader", "source", "inputs"}:
        raise RouteError("body", "action must be an OpenQASM program action")
    header = document.get("braketSchemaHeader")
    if not isinstance(header, dict) or header.get("name") != "braket.ir.openqasm.program":
        raise RouteError("body", "action must be a braket.ir.openqasm.program")
    if document.get("inputs") not in (None, {}):
        raise RouteError("body", "action inputs are not declared")
    source = document.get("source")
    if not isinstance(source, str) or '"' in source or "//" in source:
        raise RouteError("body", "the action's source must be a program without strings or comments")
    for literal in _NUMBER_LITERAL.findall(source):
        digits = literal.lstrip("-").split("e")[0].replace(".", "").strip("0")
        if len(digits) > 7:
            raise RouteError("body", f"the converted program carries a literal {literal} off the angle grid")


def attach_botocore(
    client_or_session: Any,
    *,
    allowed: Iterable[str],
    audit: AuditLog,
    routes: BotocoreRoutes | None = None,
    job_id_getter: Callable[[], str | None] = get_current_job,
    allow_plaintext: bool = False,
) -> Callable[..., None]:
    """Check and audit every request a botocore client (or a session's future clients) sends.

    Register on a session *before* its clients are created (boto3 copies the session's handlers
    into each new client), on each client directly, or on a Braket ``AwsSession`` (its Braket
    client and its boto3 session). Attaching twice is a no-op. Sessions that Braket copies are
    hooked when the ``AwsSession`` is a :class:`HookedAwsSession`.

    Args:
        client_or_session: A botocore/boto3 client, a ``boto3.Session``, a botocore session or a
            ``braket.aws.AwsSession``.
        allowed: ``host:port`` pairs (or URLs) the SDK may reach.
        audit: The audit log every request is written to before it is sent.
        routes: The operations allowed and their checks; ``None`` checks destinations only.
        job_id_getter: Returns the job the current call serves (the worker's context by default).
        allow_plaintext: Let ``http://`` endpoints through (tests and local emulators only).

    Returns:
        The handler, e.g. to unregister it.

    Raises:
        TypeError: If ``client_or_session`` has no botocore event system.
    """
    permitted = _permitted(allowed)
    tls_version, tls_group = stdlib_tls_labels("botocore")

    def before_send(request: Any, event_name: str = "before-send", **_: Any) -> None:
        # Raising here stops botocore before its HTTP layer: nothing reaches the network. Our
        # exceptions are not botocore's retryable ones, so they surface at once.
        url = str(request.url)
        parts = urlsplit(url)
        refuse_instance_metadata(parts.hostname or "")
        destination = destination_of(url)
        if destination not in permitted:
            raise EgressPolicyError(f"SDK egress to {destination} is not on the allow-list")
        plaintext = parts.scheme == "http"
        if plaintext and not allow_plaintext:
            raise EgressPolicyError(f"plain http SDK egress to {destination} refused: https only")
        operation = event_name.removeprefix("before-send.")
        if routes is not None:
            check = routes.operations.get(operation)
            if check is None:
                raise EgressPolicyError(f"SDK operation {operation} is not declared; not sent")
            try:
                check(request)
            except (RouteError, ValueError) as exc:
                raise EgressPolicyError(f"SDK request {operation} refused at the boundary: {exc}") from exc
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


def botocore_session(*, region: str, instance_metadata: bool = False) -> Any:
    """A boto3 session in ``region`` whose credential chain never asks the instance metadata service.

    The metadata service (``169.254.169.254``) is asked by botocore's own HTTP code, outside the
    ``before-send`` event, when no other source has credentials. botocore reads its off switch
    only from the process environment (``AWS_EC2_METADATA_DISABLED``), so the provider is taken
    out of this session's credential chain instead.

    Args:
        region: The operator's region.
        instance_metadata: Keep the provider (``QHYBRID_AWS_INSTANCE_METADATA=true``, on EC2).

    Raises:
        SdkHookError: If the provider is still in the chain (botocore changed how it is named).
    """
    import boto3
    import botocore.session
    from botocore.credentials import InstanceMetadataProvider

    core = botocore.session.Session()
    if not instance_metadata:
        resolver = core.get_component("credential_provider")
        resolver.remove(InstanceMetadataProvider.METHOD)
        if any(isinstance(provider, InstanceMetadataProvider) for provider in resolver.providers):
            raise SdkHookError("botocore's instance metadata provider could not be removed")
    return boto3.Session(botocore_session=core, region_name=region)


def hooked_aws_session(
    *, region: str, hook: Callable[[Any], None], instance_metadata: bool = False, boto_session: Any = None
) -> Any:
    """A Braket ``AwsSession`` in ``region`` with ``hook`` attached, also on every copy it makes.

    Braket copies its session for devices and tasks in other regions and for task batches
    (``AwsSession.copy_session``); a copy is a new boto3 session without our handlers and with the
    metadata service on. The subclass makes each copy as Braket does, but from a botocore session
    with the metadata service off (:func:`botocore_session`), and attaches ``hook`` before
    returning it.

    Args:
        region: The operator's region.
        hook: Attaches the egress policy to a session (e.g. :func:`attach_botocore` with its arguments).
        instance_metadata: See :func:`botocore_session`.
        boto_session: A ready boto3 session (tests); made by :func:`botocore_session` otherwise.
    """
    import boto3
    from botocore.config import Config
    from braket.aws import AwsSession

    class HookedAwsSession(AwsSession):  # type: ignore[misc]
        def copy_session(self, region: str | None = None, max_connections: int | None = None) -> Any:
            # As AwsSession.copy_session (braket.aws 1.x), on a metadata-free botocore session.
            config = Config(user_agent_extra=self._braket_user_agents)
            if max_connections:
                config = config.merge(Config(max_pool_connections=max_connections))
            new_region = region or self.boto_session.region_name
            creds = self.boto_session.get_credentials()
            fresh = botocore_session(region=new_region, instance_metadata=instance_metadata)
            profile = self.boto_session.profile_name
            if creds is not None and creds.method == "explicit":
                copied = boto3.Session(
                    aws_access_key_id=creds.access_key,
                    aws_secret_access_key=creds.secret_key,
                    aws_session_token=creds.token,
                    region_name=new_region,
                    botocore_session=fresh._session,
                )
            else:
                copied = boto3.Session(
                    region_name=new_region,
                    profile_name=profile if profile != "default" else None,
                    botocore_session=fresh._session,
                )
            hooked = HookedAwsSession(
                boto_session=copied,
                config=config,
                default_bucket=self._default_bucket if self._custom_default_bucket else None,
            )
            hook(hooked)
            return hooked

    session = HookedAwsSession(
        boto_session=boto_session or botocore_session(region=region, instance_metadata=instance_metadata)
    )
    hook(session)
    return session


# --------------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class IbmEndpoints:
    """Where IBM lives, from the operator's settings (never from a request).

    Attributes:
        iam: IAM (sign-in), ``https://iam.cloud.ibm.com`` unless ``IAM_URL`` is set.
        search: Global Search (finding the instance), from ``QHYBRID_IBM_URL`` or ``GLOBAL_SEARCH_URL``.
        catalog: Global Catalog (the instance's plan), from the URL or ``GLOBAL_CATALOG_URL``.
        api: Qiskit Runtime's API for the instance's region.
    """

    iam: str
    search: str
    catalog: str
    api: str

    @classmethod
    def derive(
        cls, url: str, instance: str, *, api: str | None = None, environ: Mapping[str, str] | None = None
    ) -> IbmEndpoints:
        """The endpoints qiskit-ibm-runtime and IBM's cloud SDK will call for this account.

        Mirrors the SDK's own derivation (``accounts/utils.py``, ``api/utils.py``, ``CloudAuth``)
        and the environment variables IBM's cloud SDK reads.

        Args:
            url: ``QHYBRID_IBM_URL`` (``https://cloud.ibm.com``).
            instance: The instance CRN (its location picks the API's region).
            api: The Runtime API base URL when a ``url_resolver`` decides it (tests).
            environ: The environment (``os.environ`` by default).
        """
        env = os.environ if environ is None else environ
        host = urlsplit(url).hostname or "cloud.ibm.com"
        fields = instance.split(":")
        region = fields[5] if len(fields) > 5 and fields[0] == "crn" else "us-east"
        prefix = "" if region == "us-east" else f"{region}."
        return cls(
            iam=env.get("IAM_URL") or "https://iam.cloud.ibm.com",
            search=env.get("GLOBAL_SEARCH_URL") or f"https://api.global-search-tagging.{host}",
            catalog=env.get("GLOBAL_CATALOG_URL") or f"https://globalcatalog.{host}/api/v1",
            api=api or f"https://{prefix}quantum.{host}/api/v1",
        )

    def destinations(self) -> frozenset[str]:
        """``host:port`` of every endpoint."""
        return frozenset(destination_of(u) for u in (self.iam, self.search, self.catalog, self.api))


#: IBM job ids (20 lowercase letters and digits) and backend names (``ibm_torino``).
IBM_JOB_ID = r"[a-z0-9]{20}"
IBM_BACKEND_NAME = re.compile(r"ibm_[a-z0-9_]{1,40}")


def _prefix(url: str) -> str:
    return re.escape(urlsplit(url).path.rstrip("/"))


def ibm_routes(
    endpoints: IbmEndpoints,
    *,
    api_key: str,
    tokens: TokenMinter | None,
    max_execution_time: int | None = None,
) -> RouteTable:
    """What qiskit-ibm-runtime and IBM's cloud SDK may send, for one account.

    Args:
        endpoints: Where IBM lives.
        api_key: ``QHYBRID_IBM_TOKEN``: the only key the sign-in may send.
        tokens: The gateway's minter: a job's token tag must carry a token it minted.
        max_execution_time: The largest ``cost`` (seconds) a job may ask for.

    Returns:
        The route table; body checks take the raw body bytes.
    """
    api = _prefix(endpoints.api)
    job = rf"{api}/jobs/{IBM_JOB_ID}"
    backend = rf"{api}/backends/{IBM_BACKEND_NAME.pattern}"

    def sign_in(body: Any) -> None:
        form = dict(parse_qsl(body.decode("ascii", "replace"), keep_blank_values=True))
        expected = {"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": api_key}
        if {k: v for k, v in form.items() if k != "response_type"} != expected or form.get(
            "response_type", "cloud_iam"
        ) != "cloud_iam":
            raise RouteError("body", "the sign-in may send only the configured API key")

    def search(body: Any) -> None:
        document = _json(body)
        if not set(document) <= {"query", "fields", "search_cursor"} or document.get("query") != (
            "service_name:quantum-computing"
        ):
            raise RouteError("body", "the instance search may only look for quantum-computing instances")

    def submit(body: Any) -> None:
        document = _json(body)
        declared = {"program_id", "params", "backend", "tags", "cost", "runtime", "log_level", "session_id"}
        if not {"program_id", "params", "backend", "tags"} <= set(document) <= declared:
            raise RouteError("body", f"job keys {sorted(document)} are not the declared ones")
        if document["program_id"] != "sampler" or not IBM_BACKEND_NAME.fullmatch(str(document["backend"])):
            raise RouteError("body", "a job runs the sampler on an ibm_* backend")
        tags = document["tags"]
        if not (
            isinstance(tags, list) and len(tags) == 2 and tags[0] == IBM_JOB_TAG and isinstance(tags[1], str)
        ):
            raise RouteError("body", f"tags must be [{IBM_JOB_TAG}, {IBM_TOKEN_TAG_PREFIX}<client token>]")
        _minted_tag(tags[1], tokens)
        cost = document.get("cost")
        if cost is not None and (
            not isinstance(cost, int) or (max_execution_time is not None and cost > max_execution_time)
        ):
            raise RouteError("body", f"cost must be at most {max_execution_time} seconds")

    def session(body: Any) -> None:
        document = _json(body)
        if not set(document) <= {"mode", "max_ttl", "backend", "instance"} or document.get("mode") != "batch":
            raise RouteError("body", "a session is a batch on a backend")

    def tag(value: str) -> bool:
        try:
            _minted_tag(value, tokens)
        except RouteError:
            return False
        return True

    digits = matches(r"[0-9]{1,4}")
    return RouteTable(
        [
            Route(
                "ibm iam sign-in",
                "POST",
                re.compile(rf"{_prefix(endpoints.iam)}/identity/token"),
                body=sign_in,
            ),
            Route(
                "ibm instance search",
                "POST",
                re.compile(rf"{_prefix(endpoints.search)}/v3/resources/search"),
                query={"limit": digits},
                body=search,
            ),
            Route(
                "ibm instance plan", "GET", re.compile(rf"{_prefix(endpoints.catalog)}/[A-Za-z0-9-]{{1,64}}")
            ),
            Route(
                "ibm devices", "GET", re.compile(rf"{api}/backends"), query={"include_mocks": matches("True")}
            ),
            Route("ibm device", "GET", re.compile(rf"{backend}/(configuration|properties|status)")),
            Route("ibm usage", "GET", re.compile(rf"{api}/instances/usage")),
            Route(
                "ibm job search by token",
                "GET",
                re.compile(rf"{api}/jobs"),
                query={"exclude_params": matches("true"), "limit": digits, "tags": tag},
                required=frozenset({"tags"}),
            ),
            Route("ibm job submission", "POST", re.compile(rf"{api}/jobs"), body=submit),
            Route("ibm job status", "GET", re.compile(job), query={"exclude_params": matches("true")}),
            Route("ibm job results", "GET", re.compile(rf"{job}/(results|metrics)")),
            Route("ibm job cancellation", "POST", re.compile(rf"{job}/cancel")),
            Route("ibm batch", "POST", re.compile(rf"{api}/sessions"), body=session),
            Route("ibm batch status", "GET", re.compile(rf"{api}/sessions/[a-z0-9]{{20}}")),
        ]
    )


def _json(body: Any) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise RouteError("body", "the body is not JSON") from exc
    if not isinstance(document, dict):
        raise RouteError("body", "the body is not a JSON object")
    return document


def _minted_tag(tag: str, tokens: TokenMinter | None) -> None:
    if not tag.startswith(IBM_TOKEN_TAG_PREFIX):
        raise RouteError("body", f"the token tag must start with {IBM_TOKEN_TAG_PREFIX}")
    try:
        check_token(tag.removeprefix(IBM_TOKEN_TAG_PREFIX), tokens)
    except PayloadError as exc:
        raise RouteError("body", str(exc)) from exc


@dataclass
class RequestsPolicy:
    """What every ``requests`` call of this process must be (see :func:`install_requests_guard`).

    Attributes:
        allowed: ``host:port`` pairs requests may reach.
        routes: The declared requests (for IBM: :func:`ibm_routes`).
        audit: Where each request is written before it is sent.
        headers: Declared header names (lower case) and a check of each value; the credential
            headers are checked separately.
        api_key: The configured IBM API key (``Authorization: apikey <key>``, the SDK's fallback).
        instance: The configured instance CRN (``Service-CRN``).
        allow_plaintext: Allow ``http://`` (tests only).
        job_id_getter: The job the current call serves.
        issued: Bearer tokens IAM issued to this process; only those may be presented.
    """

    allowed: frozenset[str]
    routes: RouteTable
    audit: AuditLog
    api_key: str | None = field(default=None, repr=False)
    instance: str | None = None
    allow_plaintext: bool = False
    job_id_getter: Callable[[], str | None] = get_current_job
    issued: set[str] = field(default_factory=set, repr=False)


#: Headers requests-based SDKs may send, with the values allowed (the credentials apart).
_REQUESTS_HEADERS: Mapping[str, Callable[[str], bool]] = {
    "accept": matches(r"application/json|\*/\*"),
    "accept-encoding": matches(r"(identity|gzip|deflate|br|zstd)(, (identity|gzip|deflate|br|zstd))*"),
    "content-type": matches(r"application/json|application/x-www-form-urlencoded"),
    "content-length": matches(r"[0-9]{1,9}"),
    "connection": matches(r"keep-alive|close"),
    "ibm-api-version": matches(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
    "user-agent": matches(re.escape(SDK_USER_AGENT)),
}
#: Headers the SDKs add that only describe the client (library, OS, calling file): replaced or dropped.
_FINGERPRINTS = ("User-Agent", "X-Qx-Client-Application")

_GUARD_LOCK = threading.Lock()
_POLICY: RequestsPolicy | None = None
_ORIGINAL_SEND: Callable[..., Any] | None = None


def _check_headers(policy: RequestsPolicy, request: Any) -> None:
    headers = request.headers
    for name in _FINGERPRINTS:
        headers.pop(name, None)
    headers["User-Agent"] = SDK_USER_AGENT
    for name, value in headers.items():
        key = name.lower()
        if key == "authorization":
            scheme, _, credential = str(value).partition(" ")
            fine = (scheme == "Bearer" and credential in policy.issued) or (
                scheme == "apikey" and policy.api_key is not None and credential == policy.api_key
            )
            if not fine:
                raise EgressPolicyError("header authorization refused: not a credential IAM issued here")
        elif key == "service-crn":
            if value != policy.instance:
                raise EgressPolicyError("header service-crn refused: not the configured instance")
        elif key not in _REQUESTS_HEADERS or not _REQUESTS_HEADERS[key](str(value)):
            raise EgressPolicyError(f"header {key} refused at the boundary")


def _guarded_send(adapter: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
    """``HTTPAdapter.send`` under the process's policy: check, audit, then send."""
    policy = _POLICY
    original = _ORIGINAL_SEND
    assert original is not None  # installed before this can run
    if policy is None:
        return original(adapter, request, *args, **kwargs)
    url = str(request.url)
    parts = urlsplit(url)
    refuse_instance_metadata(parts.hostname or "")
    destination = destination_of(url)
    if destination not in policy.allowed:
        raise EgressPolicyError(f"SDK egress to {destination} is not on the allow-list")
    plaintext = parts.scheme == "http"
    if plaintext and not policy.allow_plaintext:
        raise EgressPolicyError(f"plain http SDK egress to {destination} refused: https only")
    proxies = kwargs.get("proxies") or {}
    if any(proxies.get(key) for key in (parts.scheme, f"{parts.scheme}://{parts.hostname}", "all")):
        raise EgressPolicyError("SDK egress through a proxy is refused: the destination must be the provider")
    body = _body_bytes(request.body)
    target = request.path_url
    try:
        route = policy.routes.check(str(request.method).upper(), target, body, has_body=bool(body))
    except (RouteError, PayloadError) as exc:
        raise EgressPolicyError(f"SDK request refused at the boundary: {exc}") from exc
    _check_headers(policy, request)
    tls_version, tls_group = stdlib_tls_labels("requests")
    try:
        policy.audit.append(
            destination=destination,
            method=str(request.method).upper(),
            path=target,
            body=body,
            job_id=policy.job_id_getter(),
            tls_version=None if plaintext else tls_version,
            tls_group=None if plaintext else tls_group,
            tls_cipher=None,
            note=f"requests {route.name}" + ("; plaintext http (development only)" if plaintext else ""),
        )
    except AuditWriteError as exc:
        raise EgressAuditError(f"egress audit failed, SDK request to {destination} not sent: {exc}") from exc
    response = original(adapter, request, *args, **kwargs)
    if route.name == "ibm iam sign-in" and response.status_code == 200:
        # Only the bearer tokens IAM hands this process may be presented afterwards.
        token = response.json().get("access_token") if response.content else None
        if isinstance(token, str):
            policy.issued.add(token)
    return response


def install_requests_guard(policy: RequestsPolicy | None) -> None:
    """Put every ``requests`` transport of this process under ``policy`` (``None``: lift the policy).

    ``requests.adapters.HTTPAdapter.send`` is wrapped once; the policy can be replaced. Every
    session of every library that uses ``requests`` sends through it (qiskit-ibm-runtime's API
    sessions, IBM's IAM token manager, which makes a new session per call, Global Search).
    """
    global _POLICY, _ORIGINAL_SEND
    from requests.adapters import HTTPAdapter

    with _GUARD_LOCK:
        if _ORIGINAL_SEND is None:
            _ORIGINAL_SEND = HTTPAdapter.send
            HTTPAdapter.send = _guarded_send  # type: ignore[method-assign,assignment]
        _POLICY = policy


def requests_policy() -> RequestsPolicy | None:
    """The policy in force for ``requests`` in this process, if any."""
    return _POLICY


def audit_sdk_submission(
    audit: AuditLog,
    *,
    destination: str,
    payload: bytes,
    job_id: str | None,
    note: str = "",
) -> AuditEntry:
    """Record our program bytes as handed to an SDK that serialises them its own way.

    The SDK's own request is audited as well (by :func:`install_requests_guard`); this entry ties
    the job to the exact program text that was checked before conversion.

    Args:
        audit: The audit log.
        destination: ``host:port`` (or URL) the SDK will contact.
        payload: Our program bytes as handed to the SDK.
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


# --------------------------------------------------------------------------------------- self-test


def _listener() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener


def _untouched(listener: socket.socket) -> bool:
    readable, _, _ = select.select([listener], [], [], 0.2)
    return not readable


def _check_requests_hook(listener: socket.socket) -> None:
    import requests
    from requests.adapters import HTTPAdapter

    if HTTPAdapter.send is not _guarded_send or _POLICY is None:
        raise SdkHookError("requests' HTTPAdapter.send is not under the egress policy")
    url = f"https://127.0.0.1:{listener.getsockname()[1]}/qhybrid-self-test"
    try:
        requests.get(url, timeout=2)
    except EgressPolicyError:
        pass
    except Exception as exc:
        raise SdkHookError(f"requests reached the network past the egress policy: {exc!r}") from exc
    else:
        raise SdkHookError("requests sent a request to a refused destination")
    if not _untouched(listener):
        raise SdkHookError("requests opened a connection to a refused destination")


def _check_botocore_hook(listener: socket.socket, audit: AuditLog) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "braket",
        region_name="us-east-1",
        endpoint_url=f"https://127.0.0.1:{listener.getsockname()[1]}",
        aws_access_key_id="QHYBRIDSELFTEST",
        aws_secret_access_key="self-test",  # noqa: S106 - a dummy, never valid anywhere
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    attach_botocore(client, allowed=[], audit=audit)
    try:
        client.get_device(deviceArn="arn:aws:braket:::device/quantum-simulator/amazon/sv1")
    except EgressPolicyError:
        pass
    except Exception as exc:
        raise SdkHookError(f"botocore's before-send hook did not fire (event changed?): {exc!r}") from exc
    else:
        raise SdkHookError("botocore sent a request to a refused destination")
    if not _untouched(listener):
        raise SdkHookError("botocore opened a connection to a refused destination")


def _check_httpcore_events() -> None:
    """The trace events the gateway's audit hangs on, replayed on an in-memory stream."""
    import httpcore

    seen: list[str] = []
    backend = httpcore.MockBackend([b"HTTP/1.1 204 No Content\r\n", b"Content-Length: 0\r\n\r\n"])
    connection = httpcore.HTTPConnection(
        origin=httpcore.Origin(b"https", b"self-test.invalid", 443), network_backend=backend
    )
    request = httpcore.Request(
        "GET",
        "https://self-test.invalid/",
        headers=[(b"Host", b"self-test.invalid")],
        extensions={"trace": lambda name, _info: seen.append(name)},
    )
    with connection:
        connection.handle_request(request).close()
    needed = ("connection.start_tls.complete", "http11.send_request_headers.started")
    if not all(name in seen for name in needed) or seen.index(needed[0]) > seen.index(needed[1]):
        raise SdkHookError(
            f"httpcore's trace events changed ({seen}); the gateway's audit relies on {needed}"
        )


def _check_pyopenssl_bindings() -> None:
    """The OpenSSL functions :mod:`qhybrid.gateway.tls` calls through pyOpenSSL's private binding."""
    from OpenSSL._util import lib

    needed = (
        "SSL_CTX_set1_curves_list",
        "SSL_get_verify_result",
        "SSL_get0_param",
        "X509_VERIFY_PARAM_set1_ip",
        "X509_VERIFY_PARAM_set_hostflags",
    )
    missing = [name for name in needed if not hasattr(lib, name)]
    if missing:
        raise SdkHookError(f"pyOpenSSL's binding lacks {', '.join(missing)}; the TLS policy needs them")


def self_test(audit: AuditLog) -> None:
    """Prove that every egress hook fires before a socket opens; raise if one does not.

    Sends a request to a refused destination (a local socket that is watched) through requests
    and through botocore, replays httpcore's trace events on an in-memory stream, and checks the
    pyOpenSSL binding functions the TLS policy calls.

    Args:
        audit: An audit log (nothing is written to it: every request is refused first).

    Raises:
        SdkHookError: If any hook did not fire or a dependency changed under the gateway.
    """
    listener = _listener()
    try:
        _check_requests_hook(listener)
        _check_botocore_hook(listener, audit)
    finally:
        listener.close()
    _check_httpcore_events()
    _check_pyopenssl_bindings()
