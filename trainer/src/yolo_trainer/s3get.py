"""A lean S3 GET client for the trainer's downloads: SigV4 with UNSIGNED-PAYLOAD over keep-alive http.client.

The trainer's one read path: every GET, HEAD and LIST goes through it; boto3 does the writes (PUT, DELETE).
Why not boto3 here: botocore spends ~1.8 ms of Python CPU per GetObject (request model, event hooks, signer,
response parsing) under the GIL. Staging a prefix of thousands of small images on a 2-core node was bound by
that CPU, which the S3 server (or training) needs too. A GET here is a few HMACs, one request line and a
header parse. Why not obstore (the Rust object_store binding; bench/staging.py times it): its keys are
object_store ``Path``s, so a listing turns ``a//b`` into ``a/b`` and a folder marker ``d/`` into an object ``d``,
and ``a//b`` cannot be fetched at all; S3 keys are arbitrary strings and datasets do hold folder markers.

Errors keep boto3's shapes so that ``S3Store.call`` classifies them exactly as before: an S3 error response
becomes a botocore ``ClientError`` (code and message from the XML body, the HTTP status), a socket or HTTP
protocol failure a ``TransportError`` (a ``ConnectionError``: transient, retried within the budget).
Credentials (the same botocore credentials object, so refreshed ambient credentials reach both), endpoint,
region, TLS verification and CA bundle are the boto3 client's (see ``S3Store.from_config``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import re
import select
import ssl
import threading
import time
import urllib.request
from urllib.parse import quote, unquote, unquote_plus, urlsplit
from xml.etree import ElementTree

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_ERR_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_ERR_MSG = re.compile(rb"<Message>([^<]*)</Message>")
_ERR_EXTRA = {n: re.compile(rb"<%s>([^<]*)</%s>" % (n.encode(), n.encode())) for n in ("Region", "Endpoint")}
MAX_ERROR_BODY = 64 << 10


class TransportError(ConnectionError):
    """The connection failed (refused, reset, timed out, TLS, malformed HTTP): transient."""


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class SigV4Signer:
    """AWS Signature Version 4 headers for S3 requests without a body (``x-amz-content-sha256: UNSIGNED-PAYLOAD``).

    Signed headers: host, x-amz-content-sha256, x-amz-date and, with a session token, x-amz-security-token (S3
    requires every x-amz-* header signed; the GETs here send no other). Other headers (If-Match) may travel
    unsigned. Checked against botocore's signer in tests/unit/test_trainer_s3.py.

    Keys are either static (``access_key``, ``secret_key``, ``token``) or ``credentials``: a botocore
    ``Credentials`` object (from the AWS credential chain: web identity, container or instance metadata
    credentials are ``RefreshableCredentials``), frozen afresh for every request so that a rotated key is used
    as soon as botocore has refreshed it.
    """

    def __init__(
        self,
        access_key: str | None,
        secret_key: str | None,
        region: str,
        service: str = "s3",
        token: str | None = None,
        credentials=None,
    ):
        self.access_key, self.secret_key, self.token = access_key, secret_key, token
        self.credentials = credentials
        self.region, self.service = region, service
        self._keys: dict[tuple[str, str], bytes] = {}  # (date, secret) -> signing key; one derivation a day

    def _signing_key(self, date: str, secret: str) -> bytes:
        key = self._keys.get((date, secret))
        if key is None:
            key = _hmac(("AWS4" + secret).encode(), date)
            for part in (self.region, self.service, "aws4_request"):
                key = _hmac(key, part)
            self._keys = {(date, secret): key}
        return key

    def _current(self) -> tuple[str, str, str | None]:
        if self.credentials is None:
            return self.access_key or "", self.secret_key or "", self.token
        frozen = self.credentials.get_frozen_credentials()  # refreshes expiring credentials (thread-safe)
        return frozen.access_key, frozen.secret_key, frozen.token

    def sign(
        self,
        method: str,
        host: str,
        path: str,
        query: str = "",
        amz_date: str | None = None,
    ) -> dict[str, str]:
        """Headers to add to the request. ``path`` and ``query`` are sent exactly as given (already encoded;
        ``query`` already in canonical order)."""
        access_key, secret_key, token = self._current()
        amz_date = amz_date or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        date = amz_date[:8]
        signed = {"host": host, "x-amz-content-sha256": UNSIGNED_PAYLOAD, "x-amz-date": amz_date}
        if token:
            signed["x-amz-security-token"] = token
        names = sorted(signed)
        canonical = "\n".join(
            [
                method,
                path,
                query,
                "".join(f"{n}:{signed[n]}\n" for n in names),
                ";".join(names),
                UNSIGNED_PAYLOAD,
            ]
        )
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(date, secret_key), to_sign.encode(), hashlib.sha256).hexdigest()
        headers = {
            "X-Amz-Content-SHA256": UNSIGNED_PAYLOAD,
            "X-Amz-Date": amz_date,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}",
        }
        if token:
            headers["X-Amz-Security-Token"] = token
        return headers


def proxy_for(endpoint_url: str) -> str | None:
    """The HTTP(S)_PROXY URL that applies to the endpoint (NO_PROXY honoured), as botocore would use it."""
    parts = urlsplit(endpoint_url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


class Body:
    """A 2xx response's body; ``read`` raises TransportError on socket failures (never a bare OSError, which
    callers writing files could not tell from a local disk error)."""

    def __init__(self, getter: ObjectGetter, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse):
        self._getter, self._conn, self._resp = getter, conn, resp
        self.status = resp.status
        length = resp.getheader("Content-Length")
        self.size = int(length) if length is not None else None  # None: chunked
        self.etag = resp.getheader("ETag")
        self._done = False

    def header(self, name: str) -> str | None:
        return self._resp.getheader(name)

    def read(self, amt: int = 1 << 20) -> bytes:
        try:
            return self._resp.read(amt)
        except (OSError, http.client.HTTPException) as e:
            raise TransportError(f"reading the response failed: {e!r}") from e

    def readinto(self, b) -> int:
        try:
            return self._resp.readinto(b)
        except (OSError, http.client.HTTPException) as e:
            raise TransportError(f"reading the response failed: {e!r}") from e

    def close(self) -> None:
        """Returns the connection to the pool when the body was read to its end, else closes it."""
        if self._done:
            return
        self._done = True
        if self._resp.isclosed() and not self._resp.will_close:
            self._getter._put(self._conn)
        else:
            self._conn.close()

    def __enter__(self) -> Body:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ObjectGetter:
    """GET (and HEAD) of S3 objects by path-style URL over pooled keep-alive connections; thread-safe."""

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        access_key: str | None = None,
        secret_key: str | None = None,
        verify: bool | str = True,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        session_token: str | None = None,
        credentials=None,
    ):
        """``credentials``: a botocore ``Credentials`` (refreshable or not) to sign with instead of the static
        ``access_key``/``secret_key``/``session_token``; neither: anonymous (unsigned) requests."""
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported S3 endpoint URL {endpoint_url!r}")
        self.https = parts.scheme == "https"
        self.hostname = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self.host = host if parts.port in (None, 443 if self.https else 80) else f"{host}:{parts.port}"
        self.base_path = parts.path.rstrip("/")
        self.signer: SigV4Signer | None = None
        if credentials is not None:
            self.signer = SigV4Signer(None, None, region, credentials=credentials)
        elif access_key and secret_key:
            self.signer = SigV4Signer(access_key, secret_key, region, token=session_token)
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._ssl: ssl.SSLContext | None = None
        if self.https:
            if verify is False:
                self._ssl = ssl._create_unverified_context()  # the user set verifyTls: false
            else:
                from botocore.httpsession import get_cert_path  # the bundle botocore itself would use

                self._ssl = ssl.create_default_context(cafile=get_cert_path(verify))
        self._proxy: tuple[str, int, dict[str, str]] | None = None
        if proxy := proxy_for(endpoint_url):
            p = urlsplit(proxy)
            auth = {}
            if p.username:
                cred = base64.b64encode(f"{unquote(p.username)}:{unquote(p.password or '')}".encode()).decode()
                auth = {"Proxy-Authorization": f"Basic {cred}"}
            self._proxy = (p.hostname or "", p.port or 3128, auth)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    # --- connections ---------------------------------------------------------------------------------

    def _new_conn(self) -> http.client.HTTPConnection:
        if self._proxy is not None:  # https: a CONNECT tunnel; http: absolute URLs to the proxy (see _request)
            host, port, auth = self._proxy
            if not self.https:
                return http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
            conn = http.client.HTTPSConnection(host, port, timeout=self.connect_timeout, context=self._ssl)
            conn.set_tunnel(self.hostname, self.port, headers=auth)
            return conn
        if self.https:
            return http.client.HTTPSConnection(
                self.hostname, self.port, timeout=self.connect_timeout, context=self._ssl
            )
        return http.client.HTTPConnection(self.hostname, self.port, timeout=self.connect_timeout)

    def _get_conn(self) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._new_conn()
            if not _dropped(conn):
                return conn
            conn.close()

    def _put(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    # --- requests ------------------------------------------------------------------------------------

    def path(self, bucket: str, key: str) -> str:
        return f"{self.base_path}/{quote(bucket, safe='')}/{quote(key, safe='/~')}"

    def get(self, bucket: str, key: str, headers: dict[str, str] | None = None) -> Body:
        """GetObject; returns the body of a 2xx response (use as a context manager), raises ClientError for an
        S3 error response and TransportError when the connection fails."""
        return self._request("GetObject", self.path(bucket, key), "", headers)

    def head(self, bucket: str, key: str) -> tuple[int | None, str | None]:
        """HeadObject: the object's size (None if the server sent no Content-Length) and ETag; raises as ``get``."""
        with self._request("HeadObject", self.path(bucket, key), method="HEAD") as body:
            body.read()  # no body follows a HEAD; reading marks the response done, so the connection is reused
            return body.size, body.etag

    def bucket_region(self, bucket: str) -> str | None:
        """HeadBucket: the bucket's region as S3 names it in ``x-amz-bucket-region``, which AWS sends on a 200
        and on its 301/400/403 answers alike; None when the store sends no such header. Raises TransportError
        when the connection fails and ClientError for an error answer without the header."""
        from botocore.exceptions import ClientError

        try:
            with self._request("HeadBucket", f"{self.base_path}/{quote(bucket, safe='')}", method="HEAD") as body:
                body.read()
                return body.header("x-amz-bucket-region")
        except ClientError as e:
            headers = e.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            region = headers.get("x-amz-bucket-region") or e.response.get("Error", {}).get("Region")
            if region:
                return region
            raise

    def list_objects(
        self, bucket: str, prefix: str, max_keys: int | None = None
    ) -> list[tuple[str, int, str | None]]:
        """ListObjectsV2, every page (only the first with ``max_keys``): (key, size, etag) of each object under
        ``prefix``.

        Parsed for the three fields the trainer uses: botocore parses every field of every entry (dates
        with dateutil), ~0.5 ms an object, seconds for a dataset of a few thousand images."""
        out: list[tuple[str, int, str | None]] = []
        token: str | None = None
        while True:
            params = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
            if token:
                params["continuation-token"] = token
            if max_keys is not None:
                params["max-keys"] = str(max_keys)
            query = "&".join(
                f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items())
            )
            with self._request("ListObjectsV2", f"{self.base_path}/{quote(bucket, safe='')}", query) as body:
                raw = b"".join(iter(lambda: body.read(1 << 20), b""))
                if body.size is not None and len(raw) != body.size:
                    raise TransportError(f"ListObjectsV2 s3://{bucket}/{prefix}: got {len(raw)} of {body.size} bytes")
            try:
                root = ElementTree.fromstring(raw)
            except ElementTree.ParseError as e:
                raise TransportError(f"ListObjectsV2 s3://{bucket}/{prefix}: malformed response: {e}") from e
            url_encoded = (root.findtext("{*}EncodingType") or "").lower() == "url"
            for c in root.iterfind("{*}Contents"):
                key = c.findtext("{*}Key") or ""
                out.append((unquote_plus(key) if url_encoded else key, int(c.findtext("{*}Size") or 0),
                            c.findtext("{*}ETag")))  # fmt: skip
            token = root.findtext("{*}NextContinuationToken")
            if (root.findtext("{*}IsTruncated") or "").lower() != "true" or not token or max_keys is not None:
                return out

    def _request(
        self, op: str, path: str, query: str = "", headers: dict[str, str] | None = None, method: str = "GET"
    ) -> Body:
        h = {"Host": self.host, "Accept-Encoding": "identity", **(headers or {})}
        if self.signer is not None:
            h.update(self.signer.sign(method, self.host, path, query))
        url = f"{path}?{query}" if query else path
        if self._proxy is not None and not self.https:
            url = f"http://{self.host}{url}"
            h.update(self._proxy[2])
        conn = self._get_conn()
        try:
            if conn.sock is None:
                conn.connect()
                conn.sock.settimeout(self.read_timeout)
            conn.request(method, url, headers=h)
            resp = conn.getresponse()
            if 200 <= resp.status < 300:
                return Body(self, conn, resp)
            raw = resp.read(MAX_ERROR_BODY)
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise TransportError(f"{method} {self.host}{url} failed: {e!r}") from e
        if resp.isclosed() and not resp.will_close:
            self._put(conn)
        else:
            conn.close()
        raise _client_error(op, resp.status, resp.reason, raw, resp.getheader("x-amz-bucket-region"))


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection the server closed (readable = EOF or stray bytes): not reusable."""
    sock = conn.sock
    if sock is None:
        return False  # never connected: connect() on first use
    try:
        if hasattr(select, "poll"):
            p = select.poll()
            p.register(sock, select.POLLIN)
            return bool(p.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _client_error(op: str, status: int, reason: str, raw: bytes, bucket_region: str | None = None):
    """The botocore ClientError boto3 would raise for this response (so classification stays in one place):
    code and message, the Region and Endpoint elements of a wrong-region error and the x-amz-bucket-region
    header."""
    from botocore.exceptions import ClientError

    code_m, msg_m = _ERR_CODE.search(raw), _ERR_MSG.search(raw)
    code = code_m.group(1).decode(errors="replace") if code_m else str(status)
    msg = msg_m.group(1).decode(errors="replace") if msg_m else reason
    error = {"Code": code, "Message": msg}
    for name, pattern in _ERR_EXTRA.items():
        if m := pattern.search(raw):
            error[name] = m.group(1).decode(errors="replace")
    headers = {"x-amz-bucket-region": bucket_region} if bucket_region else {}
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers}}, op)
