"""S3 access for the trainer: one client, classified errors, bounded retries, parallel small-object downloads.

Error classification is the point of this module: the operator decides retry-or-fail from the exit code,
so every boto3/botocore failure becomes exactly one of these, each message naming the spec field to fix:
- ``S3AccessDenied`` (exit 12, never retried): keys the endpoint rejects, a forbidden bucket or prefix;
- ``S3BucketNotFound`` (16, never retried): a bucket named in spec.dataset, spec.output or spec.model is missing;
- ``S3WrongRegion`` (17, never retried): spec.s3.region is not the bucket's (with the region S3 names);
- ``S3TLSFailed`` (18, never retried): the endpoint's certificate is not trusted (spec.s3.caBundle) or is
  not for its host name (spec.s3.endpoint);
- ``S3Unreachable`` (19, never retried): at preflight the endpoint never answered within the retry budget
  (refused, a name that does not resolve, timeouts): spec.s3.endpoint is wrong (see ``S3Store.check_bucket``);
- ``S3Unavailable`` (exit 21, retriable by the Job): an endpoint that had answered stopped doing so for the
  retry budget (an outage), or kept answering 5xx/throttling;
- ``S3NotFound``: a missing key; callers decide what that means (missing data.yaml -> DatasetInvalid,
  missing checkpoint state -> fresh start).

Credentials: the keys of spec.s3.credentialsSecretRef (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the pod);
without them botocore's own credential chain (AWS_SESSION_TOKEN, a web identity token file with a role, ECS/EKS
container credentials, the EC2 instance metadata service, AWS config files), refreshed by botocore before they
expire; anonymous only when the chain finds nothing. The boto3 writer and the s3get reader share one
credentials object.

Retries are ours, not botocore's (botocore is set to one attempt) so that one time budget bounds a call,
whatever mix of connection errors, 5xx and throttling happens. The budget is the time S3 may keep failing one
call: it is counted from that call's first failure (not from its start: time a slow attempt spent working
before it broke is no outage), each call has its own, and a call gives up only once a failure comes after
the budget has run out. The last backoff sleep is cut short to end at the budget, so an outage shorter than
the budget always gets an attempt after it, and a call never gives up because its next random delay would
cross the budget.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from yolo_contract.exitcodes import (
    ConfigInvalid,
    S3AccessDenied,
    S3BucketNotFound,
    S3TLSFailed,
    S3Unavailable,
    S3Unreachable,
    S3WrongRegion,
    TrainerError,
    causes,
)
from yolo_contract.trainer_config import S3Config
from yolo_contract.training import DEFAULT_RETRY_BUDGET_SECONDS

from .s3get import ObjectGetter

log = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds one logical S3 operation may spend retrying transient failures before S3Unavailable: the config's
# s3.retryBudgetSeconds (spec.s3.retryBudgetSeconds), else this variable (standalone runs, tests), else 120.
RETRY_BUDGET_ENV = "YOLO_TRAINER_S3_RETRY_BUDGET"
DEFAULT_RETRY_BUDGET = float(DEFAULT_RETRY_BUDGET_SECONDS)

# The endpoint does not know or accept the keys themselves.
BAD_KEYS_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidSecurity"}
)
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidBucketName",
        "403",
        "Forbidden",
        *BAD_KEYS_CODES,
    }
)
# spec.s3.region is not the bucket's: AWS answers so (a HEAD's 301 has no body, only x-amz-bucket-region).
WRONG_REGION_CODES = frozenset(
    {"AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException", "InvalidRegion", "301"}
)
_EXPECTING_REGION = re.compile(r"expecting '([a-z0-9-]+)'")
NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "Throttling",
        "ThrottlingException",
        "500",
        "502",
        "503",
        "504",
    }
)


class S3NotFound(TrainerError):
    """A key that does not exist (the bucket does)."""


@dataclass
class S3Hints:
    """What error messages name: the settings a user would fix."""

    endpoint: str = "the S3 endpoint"
    region: str | None = None
    region_discovered_from: str | None = None  # the bucket whose region was used, spec.s3.region being unset
    credentials: str = "the keys of spec.s3.credentialsSecretRef"  # who signed (see resolve_credentials)
    ca_bundle: bool = False
    fields: dict[str, str] | None = None  # bucket -> the spec field naming it (spec.dataset, spec.output, ...)
    # Where endpoint, region and keys are set: spec.s3, or an OpenShift AI data connection (see data_connection).
    endpoint_field: str = "spec.s3.endpoint"
    region_field: str = "spec.s3.region"
    keys_field: str = "spec.s3.credentialsSecretRef"

    def data_connection(self) -> None:
        """Endpoint, region, bucket and keys come from the spec.s3.dataConnection Secret."""
        self.endpoint_field = "AWS_S3_ENDPOINT of the data connection (spec.s3.dataConnection)"
        self.region_field = "AWS_DEFAULT_REGION of the data connection (spec.s3.dataConnection)"
        self.keys_field = "the keys of the data connection (spec.s3.dataConnection)"
        if self.credentials == "the keys of spec.s3.credentialsSecretRef":
            self.credentials = self.keys_field

    def field(self, bucket: str) -> str:
        return (self.fields or {}).get(bucket) or "the job's spec (spec.dataset, spec.output, spec.model)"

    def name_bucket(self, bucket: str, field: str) -> None:
        fields = self.fields = dict(self.fields or {})
        if bucket not in fields:
            fields[bucket] = field
        elif field not in fields[bucket].split(" and "):
            fields[bucket] = f"{fields[bucket]} and {field}"

    @property
    def fix_keys(self) -> str:
        if "ambient" in self.credentials:
            return f"fix the pod's role (ambient credentials), or set {self.keys_field} to keys for it"
        if self.keys_field.startswith("spec.s3.credentialsSecretRef"):
            return f"fix the keys in the Secret named by {self.keys_field}"
        return f"fix {self.keys_field}"


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int
    etag: str | None = None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``; the key may be empty."""
    if not uri.startswith("s3://"):
        raise ConfigInvalid(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ConfigInvalid(f"s3 URI without a bucket: {uri!r}")
    return bucket, key


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def join_key(prefix: str, *parts: str) -> str:
    return "/".join(p.strip("/") for p in (prefix, *parts) if p.strip("/"))


def retry_budget_from_env(environ: dict[str, str] | None = None, configured: float | None = None) -> float:
    if configured is not None:
        return float(configured)
    env = os.environ if environ is None else environ
    try:
        return float(env.get(RETRY_BUDGET_ENV, DEFAULT_RETRY_BUDGET))
    except ValueError as e:
        raise ConfigInvalid(f"{RETRY_BUDGET_ENV} must be a number of seconds") from e


def backoff_delays(
    budget: float = math.inf, base: float = 0.5, cap: float = 20.0, rng: random.Random | None = None
):
    """Yields full-jitter exponential backoff delays whose sum stays within ``budget`` seconds (by default
    without end: ``S3Store.call`` bounds retries by time, not by this sum)."""
    rng = rng or random.Random()
    spent, attempt = 0.0, 0
    while True:
        delay = rng.uniform(0, min(cap, base * 2**attempt))
        delay = max(delay, 0.05)
        if spent + delay > budget:
            return
        spent += delay
        attempt += 1
        yield delay


def classify_error(exc: BaseException, bucket: str, key: str | None, hints: S3Hints | None = None) -> Exception | None:
    """Maps a boto error to a trainer error; None means transient (retry)."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        CredentialRetrievalError,
        EndpointConnectionError,
        HTTPClientError,
        NoCredentialsError,
        ReadTimeoutError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    hints = hints or S3Hints()
    where = s3_uri(bucket, key) if key else f"s3://{bucket}"
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        meta = exc.response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode")
        msg = err.get("Message") or code
        if code == "NoSuchBucket":
            return S3BucketNotFound(
                f"bucket {bucket!r} does not exist at {hints.endpoint} (NoSuchBucket, accessing {where}): "
                f"create it, or fix the bucket name in {hints.field(bucket)}"
            )
        if code in WRONG_REGION_CODES:
            return _wrong_region(code, msg, err, meta, where, hints)
        if code in BAD_KEYS_CODES:
            return S3AccessDenied(
                f"{hints.endpoint} rejected {hints.credentials} ({code}: {msg}) accessing {where}: "
                f"{hints.fix_keys} (or {hints.endpoint_field}, if they are another store's)"
            )
        if code in DENIED_CODES or status == 403:
            return S3AccessDenied(
                f"access denied to {where} for {hints.credentials} ({code}: {msg}): give these credentials access "
                f"to the bucket, or use others in {hints.keys_field}, or fix the bucket or prefix in "
                f"{hints.field(bucket)}"
            )
        if code in NOT_FOUND_CODES or status == 404:
            return S3NotFound(f"{where} does not exist")
        if code in TRANSIENT_CODES or (status is not None and status >= 500) or status == 429:
            return None
        return TrainerError(f"S3 error on {where}: {code}: {msg}")
    if isinstance(exc, NoCredentialsError | CredentialRetrievalError):
        return S3AccessDenied(
            f"no usable S3 credentials for {where} ({exc}): set {hints.keys_field} to a Secret with "
            f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or fix the pod's ambient credentials (its role)"
        )
    if (tls := _tls_failure(exc, hints)) is not None:
        return tls
    # HTTPClientError also covers ResponseStreamingError: a connection reset while a body streams.
    if isinstance(
        exc,
        EndpointConnectionError | ConnectionClosedError | ReadTimeoutError | BotoConnectionError | HTTPClientError,
    ):
        return None
    if isinstance(exc, ConnectionError | TimeoutError):  # socket-level errors while streaming a body
        return None
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(exc, Urllib3Error | IncompleteDownload | StreamInterrupted):
        return None
    return exc  # not an S3 condition (e.g. a size check): raise it unchanged




def _wrong_region(code: str, msg: str, err: dict, meta: dict, where: str, hints: S3Hints) -> S3WrongRegion:
    headers = {k.lower(): v for k, v in (meta.get("HTTPHeaders") or {}).items()}
    m = _EXPECTING_REGION.search(msg)
    region = err.get("Region") or headers.get("x-amz-bucket-region") or (m.group(1) if m else None)
    configured = f"{hints.region_field} is {hints.region!r}" if hints.region else hints.region_field
    if hints.region_discovered_from:  # the output bucket's region, learnt from S3: another bucket is elsewhere
        configured = f"{hints.region_field} is unset and bucket {hints.region_discovered_from} is in {hints.region!r}"
        fix = f"this bucket is in {region!r}" if region else "this bucket is in another region"
        return S3WrongRegion(f"wrong region for {where}: {configured}, but S3 answered {code} ({msg}): {fix}; the "
                             "buckets of one TrainingJob must share a region")  # fmt: skip
    if region:
        fix = f"the bucket is in {region!r}: set {hints.region_field}: {region}"
    else:
        fix = f"set {hints.region_field} to the bucket's region"
    if err.get("Endpoint"):
        fix += f" (S3 names the endpoint {err['Endpoint']})"
    return S3WrongRegion(f"wrong region for {where}: {configured}, but S3 answered {code} ({msg}): {fix}")


def _tls_failure(exc: BaseException, hints: S3Hints) -> S3TLSFailed | None:
    """A certificate that does not verify, or TLS spoken to a plain-HTTP port: no retry changes that."""
    for e in causes(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            detail = e.verify_message or e.reason or str(e)
            if e.verify_code == 10 or "expired" in str(detail).lower():
                return S3TLSFailed(
                    f"TLS: the certificate of {hints.endpoint} has expired ({detail}): the store's certificate "
                    f"must be renewed ({hints.endpoint_field} and spec.s3.caBundle are right)"
                )
            if e.verify_code == 62 or "hostname" in str(detail).lower() or "match" in str(detail).lower():
                return S3TLSFailed(
                    f"TLS: the certificate of {hints.endpoint} is not valid for that host name ({detail}): set "
                    f"{hints.endpoint_field} to a name the certificate is issued for (e.g. the service's DNS name)"
                )
            bundle = (
                "the CA bundle of spec.s3.caBundle does not hold the CA that signed it: fix spec.s3.caBundle"
                if hints.ca_bundle
                else "set spec.s3.caBundle to a ConfigMap holding the PEM CA certificate that signed it"
            )
            return S3TLSFailed(f"TLS: the certificate of {hints.endpoint} is not trusted ({detail}): {bundle}")
        if isinstance(e, ssl.SSLError) and getattr(e, "reason", None) == "WRONG_VERSION_NUMBER":
            return S3TLSFailed(
                f"TLS: {hints.endpoint} does not speak TLS ({e}): {hints.endpoint_field} should be its http:// URL"
            )
    return None


def unreachable_reason(exc: BaseException | None) -> str:
    """Why an endpoint never answered, in words (from the last failure's chain)."""
    for e in causes(exc) if exc is not None else ():
        if isinstance(e, socket.gaierror):
            return f"its host name does not resolve ({e})"
        if isinstance(e, ConnectionRefusedError):
            return f"the connection was refused ({e})"
        if isinstance(e, TimeoutError):
            return f"connecting timed out ({e})"
    for e in causes(exc) if exc is not None else ():
        text = str(e)
        if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
            return f"its host name does not resolve ({text})"
        if "Connection refused" in text:
            return f"the connection was refused ({text})"
        if "timed out" in text:
            return f"connecting timed out ({text})"
    return f"it failed: {exc}"


def _is_response(exc: BaseException) -> bool:
    """The server answered (an S3 error response), as opposed to a connection that failed."""
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError)


class IncompleteDownload(Exception):
    """Fewer bytes arrived than the object's size: retried like a connection error."""


class StreamInterrupted(Exception):
    """A response body broke off while a consumer (an archive extractor) read it: retried like a connection
    error. Deliberately not an OSError, so an extractor's handling of its own I/O errors ("corrupt archive")
    cannot mistake a network failure for bad data."""


class _BodyStream:
    """``read(n)`` over a lean GET's body for consumers such as ``tarfile`` in stream mode; a broken or short
    body raises StreamInterrupted instead of looking like the end of the data."""

    def __init__(self, body, where: str):
        self._body, self._where, self._got = body, where, 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._body.read(n if n is not None and n >= 0 else 1 << 30)
        except ConnectionError as e:
            raise StreamInterrupted(f"{self._where}: {e}") from e
        self._check(len(data), n)
        return data

    def readinto(self, b) -> int:
        """Into the caller's buffer, without a copy (``io.BufferedReader`` over this reads so)."""
        try:
            got = self._body.readinto(b)
        except ConnectionError as e:
            raise StreamInterrupted(f"{self._where}: {e}") from e
        self._check(got, len(b))
        return got

    def _check(self, got: int, asked: int) -> None:
        self._got += got
        if not got and asked != 0 and self._body.size is not None and self._got < self._body.size:
            raise StreamInterrupted(f"{self._where}: got {self._got} of {self._body.size} bytes")


@dataclass(frozen=True)
class ResolvedCredentials:
    """The credentials every S3 request is signed with (None: anonymous) and where they came from."""

    credentials: Any  # botocore.credentials.Credentials (RefreshableCredentials for roles) or None
    source: str  # for messages: "the keys of spec.s3.credentialsSecretRef", "ambient credentials (iam-role)"
    session: Any = None  # the botocore Session holding ``credentials`` (boto3 clients are made from it)


def resolve_credentials(environ: dict[str, str] | None = None) -> ResolvedCredentials:
    """The keys of spec.s3.credentialsSecretRef (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and
    AWS_SESSION_TOKEN if set, in ``environ``); without them, botocore's own credential chain (it reads the
    process environment: AWS_SESSION_TOKEN, AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, the container
    credentials endpoint, the instance metadata service, AWS config files). Anonymous only if it finds nothing."""
    import botocore.session
    from botocore.exceptions import BotoCoreError

    env = os.environ if environ is None else environ
    key_id, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if bool(key_id) != bool(secret):
        raise ConfigInvalid(
            "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the keys of spec.s3.credentialsSecretRef), "
            "or neither (ambient credentials, else anonymous)"
        )
    core = botocore.session.Session()
    if key_id:
        core.set_credentials(key_id, secret, env.get("AWS_SESSION_TOKEN") or None)
        return ResolvedCredentials(core.get_credentials(), "the keys of spec.s3.credentialsSecretRef", core)
    try:
        creds = core.get_credentials()  # cached by the session: its clients sign with this very object
    except BotoCoreError as e:  # a broken profile, an unreadable web identity token file...
        raise S3AccessDenied(
            f"resolving ambient AWS credentials failed ({e}): set spec.s3.credentialsSecretRef, or fix the pod's "
            f"ambient credentials (its service account's role)"
        ) from e
    if creds is None:
        log.warning(
            "no S3 credentials: spec.s3.credentialsSecretRef is unset and the AWS credential chain (environment, "
            "web identity token, container credentials, instance metadata, config files) found none; "
            "using ANONYMOUS (unsigned) requests"
        )
        source = "anonymous requests (no credentials found: set spec.s3.credentialsSecretRef)"
        return ResolvedCredentials(None, source, core)
    log.info("S3 credentials: ambient, from the AWS credential chain (%s)", creds.method)
    return ResolvedCredentials(creds, f"the ambient credentials ({creds.method}) of the pod", core)


def make_client(
    cfg: S3Config,
    max_pool: int = 16,
    environ: dict[str, str] | None = None,
    credentials: ResolvedCredentials | None = None,
):
    """boto3 S3 client from the config, signing with ``credentials`` (default: ``resolve_credentials``)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    resolved = credentials if credentials is not None else resolve_credentials(environ)
    bc = Config(
        retries={"total_max_attempts": 1},  # our own budgeted retries, see module doc
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=max_pool,
        s3={"addressing_style": "path"},  # MinIO/Ceph/SeaweedFS endpoints rarely have wildcard DNS
        signature_version=None if resolved.credentials is not None else UNSIGNED,
        request_checksum_calculation="when_required",  # some S3-compatible servers reject the new CRC headers
        response_checksum_validation="when_required",
    )
    verify: bool | str = cfg.ca_bundle if cfg.ca_bundle else cfg.verify_tls
    # The resolving session: its clients sign with resolved.credentials, the object the getter signs with too.
    session = boto3.session.Session(botocore_session=resolved.session, region_name=cfg.region or DEFAULT_REGION)
    return session.client("s3", endpoint_url=cfg.endpoint or None, config=bc, verify=verify)


#: What S3-compatible stores (MinIO, Ceph RGW, SeaweedFS) accept, and AWS' region for unset spec.s3.region
#: when the bucket's region cannot be learnt.
DEFAULT_REGION = "us-east-1"
#: Without spec.s3.endpoint: AWS' global endpoint answers HeadBucket for a bucket in any region, naming it.
AWS_GLOBAL_ENDPOINT = "https://s3.amazonaws.com"


def discover_region(cfg: S3Config, bucket: str, credentials: ResolvedCredentials | None = None) -> str | None:
    """spec.s3.region unset: ``bucket``'s region from S3's ``x-amz-bucket-region`` header on one HeadBucket
    (signed for us-east-1; AWS names the region on its 200, 301, 400 and 403 answers alike). None when the
    store names none (most S3-compatible stores) or does not answer: the caller uses DEFAULT_REGION, and
    the preflight's bucket check then classifies a real problem (keys, TLS, endpoint) with its own message."""
    probe = cfg.model_copy(update={"region": DEFAULT_REGION})
    getter = make_getter(probe, cfg.endpoint or AWS_GLOBAL_ENDPOINT, credentials=credentials)
    try:
        region = getter.bucket_region(bucket)
    except Exception as e:  # the bucket check that follows reports it, naming the field to fix
        log.info("region of bucket %s not discovered (%s): using %s", bucket, e, DEFAULT_REGION)
        return None
    finally:
        getter.close()
    if region and not re.fullmatch(r"[a-z0-9-]{1,64}", region):
        log.warning("ignoring bucket %s's region %r: not a region name", bucket, region)
        return None
    log.info("bucket %s is in region %s (spec.s3.region unset)", bucket, region or f"? (using {DEFAULT_REGION})")
    return region or None


def make_getter(
    cfg: S3Config, endpoint: str, environ: dict[str, str] | None = None, credentials: ResolvedCredentials | None = None
) -> ObjectGetter:
    """The GET/LIST client for ``endpoint`` (the boto3 client's) with the config's region and TLS settings and
    the same credentials (and the HTTP(S)_PROXY that applies to the endpoint, as botocore would use)."""
    resolved = credentials if credentials is not None else resolve_credentials(environ)
    verify: bool | str = cfg.ca_bundle if cfg.ca_bundle else cfg.verify_tls
    return ObjectGetter(
        endpoint,
        cfg.region or DEFAULT_REGION,
        verify=verify,
        connect_timeout=10,
        read_timeout=60,
        credentials=resolved.credentials,
    )


class S3Store:
    """Thin wrapper: every call retried within the budget and classified. Every read (GET, HEAD, LIST) goes
    through ``getter`` (yolo_trainer.s3get), every write (PUT, DELETE) through the boto3 ``client``."""

    def __init__(
        self,
        client,
        retry_budget: float = DEFAULT_RETRY_BUDGET,
        sleep: Callable[[float], None] = time.sleep,
        getter: ObjectGetter | None = None,
        clock: Callable[[], float] | None = None,
        hints: S3Hints | None = None,
    ):
        self._client = client
        self._make_client: Callable[[], Any] | None = None
        self._client_lock = threading.Lock()
        self.hints = hints or S3Hints()
        self.answered = False  # S3 has answered a request (any HTTP response) in this process
        self.retry_budget = retry_budget
        self._sleep = sleep
        self._clock = clock or time.monotonic  # times the attempts; the sleeps count as what they were asked
        self.getter = getter  # every GET, HEAD and LIST

    @classmethod
    def from_config(cls, cfg: S3Config, max_pool: int = 16, region_bucket: str | None = None) -> S3Store:
        """``region_bucket``: with spec.s3.region unset, the bucket whose region every request uses (see
        ``discover_region``)."""
        resolved = resolve_credentials()
        discovered_from = None
        if cfg.region is None:
            region = discover_region(cfg, region_bucket, resolved) if region_bucket else None
            discovered_from = region_bucket if region else None
            cfg = cfg.model_copy(update={"region": region or DEFAULT_REGION})

        def writer():
            return make_client(cfg, max_pool=max_pool, credentials=resolved)

        # Building the boto3 writer takes 40-170 ms of staging time (bench/staging.py) and staging only reads,
        # so with an explicit endpoint (botocore uses it verbatim) it is built at the first write. Without one,
        # botocore resolves the AWS endpoint (region, AWS_ENDPOINT_URL...), and the reader must use the same.
        client = None if cfg.endpoint else writer()
        endpoint = cfg.endpoint or client.meta.endpoint_url
        hints = S3Hints(
            endpoint=endpoint, region=cfg.region, credentials=resolved.source, ca_bundle=bool(cfg.ca_bundle),
            region_discovered_from=discovered_from,
        )  # fmt: skip
        if cfg.data_connection:
            hints.data_connection()
        getter = make_getter(cfg, endpoint, credentials=resolved)
        budget = retry_budget_from_env(configured=cfg.retry_budget_seconds)
        store = cls(client, retry_budget=budget, getter=getter, hints=hints)
        if client is None:
            store._make_client = writer
        return store

    @property
    def client(self):
        """The boto3 client every write goes through (built on first use when ``from_config`` deferred it)."""
        if self._client is None and self._make_client is not None:
            with self._client_lock:  # the checkpoint upload thread and the main thread may both write first
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def call(self, what: str, bucket: str, key: str | None, fn: Callable[[], T]) -> T:
        """Runs ``fn`` until it succeeds, retrying transient failures while S3 has been failing this call for
        less than the budget; then S3Unavailable. Permanent errors are mapped and raised at once.

        The outage is timed from this call's first failure: the attempts after it (by ``clock``, so a hung
        attempt's timeout counts) plus the backoff sleeps (as asked of ``sleep``, so a test's no-op sleep
        stays fast). No state is shared between calls or threads."""
        delays = backoff_delays()
        failing = None  # seconds S3 has been failing this call; None: no failure yet
        started = self._clock()
        while True:
            try:
                result = fn()
                self.answered = True
                return result
            except Exception as exc:
                if _is_response(exc):
                    self.answered = True
                mapped = classify_error(exc, bucket, key, self.hints)
                if mapped is not None:
                    if mapped is exc:
                        raise
                    raise mapped from exc
                now = self._clock()
                failing = 0.0 if failing is None else failing + (now - started)
                left = self.retry_budget - failing
                if left <= 0:
                    where = s3_uri(bucket, key) if key else f"s3://{bucket}"
                    raise S3Unavailable(
                        f"S3 unavailable: {what} {where} kept failing for {failing:.1f}s "
                        f"(budget {self.retry_budget:g}s): {exc}"
                    ) from exc
                delay = min(next(delays), left)  # the last sleep ends at the budget: one more try there
                log.warning("S3 %s %s/%s failed (%s); retrying in %.1fs", what, bucket, key or "", exc, delay)
                self._sleep(delay)
                failing += delay
                started = self._clock()

    # --- reads -------------------------------------------------------------------------------------------

    def list(self, bucket: str, prefix: str) -> list[S3Object]:
        getter = self.getter
        return self.call("list", bucket, prefix, lambda: [S3Object(*o) for o in getter.list_objects(bucket, prefix)])

    def size(self, bucket: str, key: str) -> int | None:
        """The object's size in bytes, from a HEAD (None if the server does not say); S3NotFound if missing."""
        getter = self.getter
        return self.call("head", bucket, key, lambda: getter.head(bucket, key)[0])

    def get_bytes(self, bucket: str, key: str, max_size: int = 64 << 20) -> bytes:
        def run() -> bytes:
            with self.getter.get(bucket, key) as body:
                if body.size is None:
                    raise IncompleteDownload(f"s3://{bucket}/{key}: response without Content-Length")
                if body.size > max_size:
                    raise TrainerError(f"s3://{bucket}/{key} is {body.size} bytes, more than the {max_size} allowed")
                data = b"".join(iter(lambda: body.read(1 << 20), b""))
            if len(data) != body.size:
                raise IncompleteDownload(f"got {len(data)} of {body.size} bytes")
            return data

        return self.call("get", bucket, key, run)

    def get_bytes_or_none(self, bucket: str, key: str) -> bytes | None:
        try:
            return self.get_bytes(bucket, key)
        except S3NotFound:
            return None

    def download(
        self,
        bucket: str,
        key: str,
        dest: Path,
        expected_size: int | None = None,
        max_size: int | None = None,
        if_match: str | None = None,
        make_parent: bool = True,
    ) -> int:
        """Streams one object to ``dest`` (via ``dest.part`` + rename: a reader never sees half a file)."""
        if make_parent:
            dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")

        def check(size: int) -> None:
            if expected_size is not None and size != expected_size:
                raise TrainerError(
                    f"s3://{bucket}/{key} changed while staging ({size} != {expected_size} bytes)"
                )
            if max_size is not None and size > max_size:
                raise TrainerError(f"s3://{bucket}/{key} is {size} bytes, more than the {max_size} allowed")

        def write(chunks: Iterable[bytes], size: int) -> int:
            got = 0
            try:
                with open(tmp, "wb") as f:
                    for chunk in chunks:
                        got += len(chunk)
                        f.write(chunk)
                if got != size:
                    raise IncompleteDownload(f"s3://{bucket}/{key}: got {got} of {size} bytes")
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
            return size

        def run() -> int:
            with self.getter.get(bucket, key, {"If-Match": if_match} if if_match else None) as body:
                if body.size is None:  # S3 always sends it for GetObject; without it a short body goes unnoticed
                    raise IncompleteDownload(f"s3://{bucket}/{key}: response without Content-Length")
                check(body.size)
                return write(iter(lambda: body.read(1 << 20), b""), body.size)

        return self.call("download", bucket, key, run)

    def stream(self, bucket: str, key: str, consume: Callable[[Any], T], max_size: int | None = None) -> T:
        """GETs one object and hands its body to ``consume`` as a file-like object (``read(n)``), so a consumer
        can work while the bytes arrive. If the connection breaks,
        the GET and ``consume`` are run again from the start within the retry budget: ``consume`` must start
        from scratch each time."""
        getter = self.getter

        def run() -> T:
            with getter.get(bucket, key) as body:
                if max_size is not None and body.size is not None and body.size > max_size:
                    raise TrainerError(f"s3://{bucket}/{key} is {body.size} bytes, more than the {max_size} allowed")
                return consume(_BodyStream(body, f"s3://{bucket}/{key}"))

        return self.call("download", bucket, key, run)

    def download_many(
        self,
        bucket: str,
        items: Iterable[tuple[str, Path, int | None]],
        concurrency: int = 16,
        cancel: threading.Event | None = None,
    ) -> int:
        """Downloads (key, dest, size) items with ``concurrency`` threads; the first failure stops the rest and is
        raised. Workers take the next item from a shared iterator (no future per object: thousands of them cost
        the GIL more than the GETs do)."""
        items = list(items)
        cancel = cancel or threading.Event()
        for parent in {dest.parent for _, dest, _ in items}:
            parent.mkdir(parents=True, exist_ok=True)
        todo = iter(items)
        lock = threading.Lock()
        errors: list[BaseException] = []
        totals: list[int] = []

        def worker() -> None:
            n = 0
            try:
                while not cancel.is_set():
                    with lock:
                        item = next(todo, None)
                    if item is None:
                        break
                    key, dest, size = item
                    n += self.download(bucket, key, dest, expected_size=size, make_parent=False)
            except BaseException as e:
                errors.append(e)
                cancel.set()
            totals.append(n)

        threads = [
            threading.Thread(target=worker, name=f"s3-dl-{i}", daemon=True)
            for i in range(max(1, min(concurrency, len(items))))
        ]
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        except BaseException:
            # SIGTERM raised in this (main) thread: drop the rest instead of downloading a large dataset inside
            # the grace period; the objects in flight finish or fail on their own.
            cancel.set()
            for t in threads:
                t.join()
            raise
        if errors:
            raise errors[0]
        return sum(totals)

    # --- writes ------------------------------------------------------------------------------------------

    def upload_file(self, path: Path, bucket: str, key: str, content_type: str | None = None) -> str | None:
        """One PUT (atomic per object on S3); returns the ETag. Files are re-opened per attempt."""
        extra = {"ContentType": content_type} if content_type else {}

        def run() -> str | None:
            with open(path, "rb") as f:
                resp = self.client.put_object(Bucket=bucket, Key=key, Body=f, **extra)
            return resp.get("ETag")

        return self.call("upload", bucket, key, run)

    def put_bytes(
        self, bucket: str, key: str, data: bytes, content_type: str = "application/json"
    ) -> str | None:
        return self.call(
            "put",
            bucket,
            key,
            lambda: self.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type).get(
                "ETag"
            ),
        )

    def delete(self, bucket: str, key: str) -> None:
        self.call("delete", bucket, key, lambda: self.client.delete_object(Bucket=bucket, Key=key))

    def check_bucket(self, bucket: str, prefix: str = "", field: str | None = None) -> None:
        """Fails fast (before any training) on a missing bucket, wrong keys or region, TLS that does not
        verify, or an endpoint that never answers: that is a misconfiguration (S3Unreachable, not retried by
        the Job), unlike an outage of an S3 that has answered before (S3Unavailable). ``field``: the spec field
        naming the bucket, for messages."""
        if field:
            self.hints.name_bucket(bucket, field)
        getter = self.getter
        try:
            self.call("list", bucket, prefix or None, lambda: getter.list_objects(bucket, prefix, max_keys=1))
        except S3Unavailable as e:
            if self.answered:
                raise
            raise S3Unreachable(
                f"S3 endpoint {self.hints.endpoint} never answered within the retry budget "
                f"({self.retry_budget:g}s, listing s3://{bucket}/{prefix}): {unreachable_reason(e.__cause__)}: "
                f"fix {self.hints.endpoint_field} (or the network path to it: DNS, NetworkPolicy, proxy)"
            ) from e

    def head_etag(self, bucket: str, key: str) -> Any:
        getter = self.getter
        return self.call("head", bucket, key, lambda: getter.head(bucket, key)[1])
