"""S3 error classification, retry budget and URI handling (no server: fakes and a closed port)."""

from __future__ import annotations

import random
import socket
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from yolo_contract.exitcodes import (
    ConfigInvalid,
    ExitCode,
    S3AccessDenied,
    S3BucketNotFound,
    S3TLSFailed,
    S3Unavailable,
    S3Unreachable,
    S3WrongRegion,
    TrainerError,
)
from yolo_contract.trainer_config import S3Config
from yolo_trainer.s3 import (
    S3Hints,
    S3NotFound,
    S3Store,
    backoff_delays,
    classify_error,
    make_client,
    parse_s3_uri,
)

pytestmark = pytest.mark.unit


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": f"msg {code}"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


def test_parse_s3_uri():
    assert parse_s3_uri("s3://bucket/a/b.zip") == ("bucket", "a/b.zip")
    assert parse_s3_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(ConfigInvalid):
        parse_s3_uri("https://x/y")
    with pytest.raises(ConfigInvalid):
        parse_s3_uri("s3:///key")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("AccessDenied", 403, S3AccessDenied),
        ("InvalidAccessKeyId", 403, S3AccessDenied),
        ("SignatureDoesNotMatch", 403, S3AccessDenied),
        ("ExpiredToken", 400, S3AccessDenied),
        ("NoSuchBucket", 404, S3BucketNotFound),
        ("AuthorizationHeaderMalformed", 400, S3WrongRegion),
        ("PermanentRedirect", 301, S3WrongRegion),
        ("IllegalLocationConstraintException", 400, S3WrongRegion),
        ("301", 301, S3WrongRegion),
        ("NoSuchKey", 404, S3NotFound),
        ("SlowDown", 503, None),
        ("InternalError", 500, None),
        ("WeirdCode", 400, TrainerError),
    ],
)
def test_classify_client_errors(code, status, expected):
    got = classify_error(client_error(code, status), "bkt", "some/key")
    if expected is None:
        assert got is None
    else:
        assert type(got) is expected
        assert "bkt" in str(got)
    if expected is S3AccessDenied:
        assert got.code == ExitCode.S3_ACCESS_DENIED
    if expected in (S3AccessDenied, S3BucketNotFound, S3WrongRegion):
        assert not got.code.retriable


def test_missing_bucket_message_names_bucket_and_field():
    hints = S3Hints(endpoint="http://s3:9000", fields={"nobucket": "spec.output"})
    got = classify_error(client_error("NoSuchBucket", 404), "nobucket", "k", hints)
    assert "nobucket" in str(got) and "does not exist" in str(got) and "spec.output" in str(got)
    assert "http://s3:9000" in str(got) and got.code == ExitCode.S3_BUCKET_NOT_FOUND


def test_wrong_keys_name_the_secret_and_where_the_keys_came_from():
    got = classify_error(client_error("InvalidAccessKeyId", 403), "b", "k", S3Hints(credentials="the ambient x"))
    assert "spec.s3.credentialsSecretRef" in str(got) and "the ambient x" in str(got) and "role" in str(got)
    got = classify_error(client_error("SignatureDoesNotMatch", 403), "b", "k")
    assert "the Secret named by spec.s3.credentialsSecretRef" in str(got)


def test_a_data_connection_job_is_told_to_fix_the_data_connection():
    hints = S3Hints(region="us-east-1")
    hints.data_connection()
    got = str(classify_error(client_error("InvalidAccessKeyId", 403), "b", "k", hints))
    assert "spec.s3.dataConnection" in got and "credentialsSecretRef" not in got
    got = str(classify_error(client_error("PermanentRedirect", 301), "b", "k", hints))
    assert "AWS_DEFAULT_REGION of the data connection" in got


def test_a_bucket_named_by_several_fields_names_them_all():
    hints = S3Hints()
    for field in ("spec.output", "spec.dataset", "spec.output"):
        hints.name_bucket("shared", field)
    assert hints.field("shared") == "spec.output and spec.dataset"


def test_wrong_region_names_the_region_s3_reports():
    """AWS: 400 AuthorizationHeaderMalformed with <Region>, or a 301 (a HEAD's has only x-amz-bucket-region)."""
    from yolo_trainer.s3get import _client_error

    body = (b"<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; "
            b"the region 'us-east-1' is wrong; expecting 'eu-central-1'</Message><Region>eu-central-1</Region>"
            b"</Error>")  # fmt: skip
    hints = S3Hints(region="us-east-1")
    got = classify_error(_client_error("ListObjectsV2", 400, "Bad Request", body), "b", None, hints)
    assert type(got) is S3WrongRegion and got.code == ExitCode.S3_WRONG_REGION and not got.code.retriable
    assert "spec.s3.region: eu-central-1" in str(got) and "'us-east-1'" in str(got)
    head = _client_error("HeadObject", 301, "Moved Permanently", b"", "ap-south-1")
    assert "spec.s3.region: ap-south-1" in str(classify_error(head, "b", "k", hints))
    minio = client_error("AuthorizationHeaderMalformed", 400)  # no region anywhere: still names the field
    assert "spec.s3.region" in str(classify_error(minio, "b", "k"))


def test_certificate_failures_are_tls_failed_at_once():
    import ssl

    def wrapped(err: BaseException) -> Exception:
        from yolo_trainer.s3get import TransportError

        try:
            try:
                raise err
            except OSError as e:
                raise TransportError(f"GET failed: {e!r}") from e
        except TransportError as t:
            return t

    untrusted = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    untrusted.verify_code, untrusted.verify_message = 20, "unable to get local issuer certificate"
    got = classify_error(wrapped(untrusted), "b", "k", S3Hints(endpoint="https://s3.local"))
    assert type(got) is S3TLSFailed and "spec.s3.caBundle" in str(got) and "https://s3.local" in str(got)
    got = classify_error(wrapped(untrusted), "b", "k", S3Hints(ca_bundle=True))
    assert "does not hold the CA" in str(got)
    mismatch = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    mismatch.verify_code, mismatch.verify_message = 62, "Hostname mismatch, certificate is not valid for 'x'."
    got = classify_error(wrapped(mismatch), "b", "k")
    assert type(got) is S3TLSFailed and "spec.s3.endpoint" in str(got) and "host name" in str(got)
    expired = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    expired.verify_code, expired.verify_message = 10, "certificate has expired"
    assert "renewed" in str(classify_error(wrapped(expired), "b", "k"))
    assert not ExitCode.S3_TLS_FAILED.retriable


def test_connection_errors_are_transient():
    assert classify_error(EndpointConnectionError(endpoint_url="http://x"), "b", "k") is None
    assert classify_error(ConnectionResetError(), "b", "k") is None


def test_backoff_delays_stay_within_budget():
    for seed in range(20):
        delays = list(backoff_delays(10.0, rng=random.Random(seed)))
        assert sum(delays) <= 10.0 and len(delays) >= 3


def test_store_retries_transient_then_succeeds():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise client_error("ServiceUnavailable", 503)
        return "ok"

    store = S3Store(client=None, retry_budget=30, sleep=lambda s: None)
    assert store.call("get", "b", "k", flaky) == "ok" and len(calls) == 3


def test_store_gives_up_with_s3_unavailable_after_budget():
    store = S3Store(client=None, retry_budget=0.3, sleep=time.sleep)
    t = time.monotonic()
    with pytest.raises(S3Unavailable, match=r"s3://b/k"):
        store.call(
            "get", "b", "k", lambda: (_ for _ in ()).throw(EndpointConnectionError(endpoint_url="http://x"))
        )
    assert time.monotonic() - t < 2


def test_store_never_retries_access_denied():
    calls = []

    def denied():
        calls.append(1)
        raise client_error("AccessDenied", 403)

    with pytest.raises(S3AccessDenied):
        S3Store(client=None, retry_budget=30, sleep=lambda s: None).call("get", "b", "k", denied)
    assert len(calls) == 1


def test_an_endpoint_that_never_answered_is_unreachable_at_preflight_and_unavailable_after():
    from yolo_trainer.s3 import make_getter

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = S3Config(endpoint=f"http://127.0.0.1:{port}")
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    client = make_client(cfg, environ=env)
    store = S3Store(client, retry_budget=1.0, getter=make_getter(cfg, cfg.endpoint, environ=env))
    with pytest.raises(S3Unreachable, match=r"refused.*spec\.s3\.endpoint") as e:
        store.check_bucket("bucket")
    assert not e.value.code.retriable
    with pytest.raises(S3Unavailable, match=r"unavailable"):  # any other call: an outage, retriable
        store.list("bucket", "")
    store.answered = True  # once S3 has answered, even the preflight check is an outage
    with pytest.raises(S3Unavailable, match=r"unavailable"):
        store.check_bucket("bucket")


def test_unreachable_reasons():
    import socket as sk

    from yolo_trainer.s3 import unreachable_reason
    from yolo_trainer.s3get import TransportError

    def chained(inner):
        try:
            try:
                raise inner
            except OSError as e:
                raise TransportError("x") from e
        except TransportError as t:
            return t

    assert "does not resolve" in unreachable_reason(chained(sk.gaierror(-2, "Name or service not known")))
    assert "refused" in unreachable_reason(chained(ConnectionRefusedError(111, "Connection refused")))
    assert "timed out" in unreachable_reason(chained(TimeoutError("timed out")))
    dns = EndpointConnectionError(endpoint_url="http://nowhere.invalid", error=sk.gaierror(-2, "Name not known"))
    assert "does not resolve" in unreachable_reason(dns)


def test_credentials_must_come_in_pairs():
    with pytest.raises(ConfigInvalid, match=r"both"):
        make_client(S3Config(endpoint="http://127.0.0.1:1"), environ={"AWS_ACCESS_KEY_ID": "k"})


# --- the lean GET client (yolo_trainer.s3get) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "key", "params"),
    [
        ("http://127.0.0.1:7333", "ds/images/train/0001.jpg", None),
        ("https://s3.eu-west-1.example.com", "a dir/ü+x~y=1 (2).jpg", None),
        ("https://minio.local:9000/base", "k", None),
        ("http://127.0.0.1:7333", "", {"list-type": "2", "prefix": "a dir/+x", "encoding-type": "url",
                                       "continuation-token": "1/a+b=="}),
    ],
)  # fmt: skip
def test_sigv4_signer_matches_botocore(endpoint, key, params):
    """Same canonical request, string to sign and signature as botocore's S3 signer for a GET."""
    from urllib.parse import quote

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from yolo_trainer.s3get import ObjectGetter

    getter = ObjectGetter(endpoint, "eu-west-1", "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    amz_date = "20261123T175600Z"
    path = getter.path("my-bucket", key) if key else f"{getter.base_path}/my-bucket"
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted((params or {}).items()))
    ours = getter.signer.sign("GET", getter.host, path, query, amz_date=amz_date)

    auth = S3SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "s3", "eu-west-1")
    req = AWSRequest(method="GET", url=endpoint.rstrip("/").rsplit("/base", 1)[0] + path, params=params or {},
                     headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD", "X-Amz-Date": amz_date})  # fmt: skip
    req.context["timestamp"] = amz_date
    signature = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
    auth._inject_signature_to_request(req, signature)
    assert ours["Authorization"] == req.headers["Authorization"]
    assert ours["X-Amz-Date"] == amz_date and ours["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"


def _botocore_headers(endpoint: str, path: str, amz_date: str, creds, params=None) -> dict[str, str]:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest

    auth = S3SigV4Auth(creds, "s3", "eu-west-1")
    req = AWSRequest(method="GET", url=endpoint + path, params=params or {},
                     headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD", "X-Amz-Date": amz_date})  # fmt: skip
    req.context["timestamp"] = amz_date
    if creds.token:  # as SigV4Auth._modify_request_before_signing adds it (which would also hash the payload)
        req.headers["X-Amz-Security-Token"] = creds.token
    signature = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
    auth._inject_signature_to_request(req, signature)
    return dict(req.headers.items())


def test_sigv4_signer_with_a_session_token_matches_botocore():
    """Temporary credentials (IMDS, web identity, container): x-amz-security-token is sent and signed."""
    from botocore.credentials import Credentials
    from yolo_trainer.s3get import ObjectGetter

    creds = Credentials("ASIAEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "FwoGZXIvYXdzE/token+with==")
    amz_date = "20261123T175600Z"
    for getter in (
        ObjectGetter("http://127.0.0.1:7333", "eu-west-1", creds.access_key, creds.secret_key,
                     session_token=creds.token),
        ObjectGetter("http://127.0.0.1:7333", "eu-west-1", credentials=creds),
    ):  # fmt: skip
        path = getter.path("my-bucket", "ds/a b.jpg")
        ours = getter.signer.sign("GET", getter.host, path, "", amz_date=amz_date)
        theirs = _botocore_headers("http://127.0.0.1:7333", path, amz_date, creds)
        assert ours["Authorization"] == theirs["Authorization"]
        assert "x-amz-security-token" in ours["Authorization"]
        assert ours["X-Amz-Security-Token"] == theirs["X-Amz-Security-Token"] == creds.token


def test_signer_freezes_refreshable_credentials_per_request():
    """Rotated ambient credentials are used from the next request on, as botocore's own clients do."""
    import datetime

    from botocore.credentials import Credentials, RefreshableCredentials
    from yolo_trainer.s3get import ObjectGetter

    issued = []

    def refresh():
        n = len(issued)
        issued.append(n)
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=0 if n == 0 else 3600)
        return {"access_key": f"ASIA{n}", "secret_key": f"secret{n}", "token": f"token{n}",
                "expiry_time": expiry.isoformat()}  # fmt: skip

    creds = RefreshableCredentials.create_from_metadata(refresh(), refresh, "iam-role")
    getter = ObjectGetter("http://127.0.0.1:7333", "eu-west-1", credentials=creds)
    amz_date = "20261123T175600Z"
    path = getter.path("b", "k")
    ours = getter.signer.sign("GET", getter.host, path, "", amz_date=amz_date)  # the first set has expired
    assert "Credential=ASIA1/" in ours["Authorization"] and ours["X-Amz-Security-Token"] == "token1"
    theirs = _botocore_headers("http://127.0.0.1:7333", path, amz_date, Credentials("ASIA1", "secret1", "token1"))
    assert ours["Authorization"] == theirs["Authorization"]


def test_credentials_come_from_the_aws_chain_when_no_secret_is_set(monkeypatch, tmp_path, caplog):
    from yolo_trainer.s3 import make_getter, resolve_credentials

    for k in ("AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
              "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):  # fmt: skip
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "tok")
    got = resolve_credentials()  # the secret's variables: static keys, with the session token
    assert tuple(got.credentials.get_frozen_credentials())[:3] == ("ASIAENV", "s", "tok")
    assert "credentialsSecretRef" in got.source
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k)
    (tmp_path / "creds").write_text("[default]\naws_access_key_id = AKIAFILE\naws_secret_access_key = f\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "creds"))
    got = resolve_credentials({})  # no keys from a Secret: the chain (here: a credentials file)
    assert got.credentials.access_key == "AKIAFILE" and "ambient" in got.source
    cfg = S3Config(endpoint="http://127.0.0.1:1")
    client = make_client(cfg, environ={}, credentials=got)
    assert client._request_signer._credentials is got.credentials  # the writer signs with the same object
    assert make_getter(cfg, cfg.endpoint, credentials=got).signer.credentials is got.credentials
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with caplog.at_level("WARNING"):
        got = resolve_credentials({})
    assert got.credentials is None and "ANONYMOUS" in caplog.text
    assert make_getter(cfg, cfg.endpoint, credentials=got).signer is None


class FakeS3:
    """A tiny path-style S3 over HTTP/1.1 keep-alive, scripted per key: a list of responses to give first
    (``(status, code)``, ``"truncate"``: headers promise more bytes than are sent, then the socket closes)."""

    def __init__(self, objects: dict[str, bytes], page_size: int = 1000):
        import http.server
        import threading
        from urllib.parse import parse_qs, unquote, urlsplit

        self.objects, self.page_size = objects, page_size
        self.script: dict[str, list] = {}
        self.connections = 0
        self.gets: list[str] = []
        self.heads: list[str] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                fake.connections += 1
                super().setup()

            def log_message(self, *a):
                pass

            def _error(self, status: int, code: str) -> None:
                body = f"<Error><Code>{code}</Code><Message>msg {code}</Message></Error>".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                assert self.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=k/")
                parts = urlsplit(self.path)
                bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
                if bucket != "b":
                    return self._error(404, "NoSuchBucket")
                if not key:
                    return self._list(parse_qs(parts.query))
                fake.gets.append(key)
                todo = fake.script.get(key)
                action = todo.pop(0) if todo else None
                if action == "truncate":
                    data = fake.objects[key]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                    return
                if action is not None:
                    return self._error(*action)
                if key not in fake.objects:
                    return self._error(404, "NoSuchKey")
                data = fake.objects[key]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", '"e"')
                self.end_headers()
                self.wfile.write(data)

            def do_HEAD(self):
                assert self.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=k/")
                bucket, _, key = unquote(urlsplit(self.path).path).lstrip("/").partition("/")
                fake.heads.append(key)
                if bucket != "b" or key not in fake.objects:
                    self.send_response(404)  # HEAD errors carry no body: the status is all there is
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(fake.objects[key])))
                self.send_header("ETag", '"e"')
                self.end_headers()

            def _list(self, q):
                from urllib.parse import quote_plus

                prefix = q.get("prefix", [""])[0]
                keys = sorted(k for k in fake.objects if k.startswith(prefix))
                start = int(q.get("continuation-token", ["0"])[0])
                page = keys[start : start + fake.page_size]
                more = start + fake.page_size < len(keys)
                entries = "".join(f"<Contents><Key>{quote_plus(k, safe='/')}</Key><Size>{len(fake.objects[k])}</Size>"
                                  f"<ETag>&quot;e&quot;</ETag></Contents>" for k in page)  # fmt: skip
                token = f"<NextContinuationToken>{start + fake.page_size}</NextContinuationToken>" if more else ""
                body = ('<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><EncodingType>url'
                        f"</EncodingType><IsTruncated>{str(more).lower()}</IsTruncated>{token}{entries}"
                        "</ListBucketResult>").encode()  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def store(self, budget: float = 30):
        from yolo_trainer.s3get import ObjectGetter

        getter = ObjectGetter(self.url, "us-east-1", "k", "s")
        return S3Store(None, retry_budget=budget, sleep=lambda s: None, getter=getter)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_s3():
    objects = {f"ds/images/{i:03d}.jpg": bytes([i % 256]) * (1000 + i * 37) for i in range(60)}
    objects["ds/a b+c.txt"] = b"plus and space"
    fake = FakeS3(objects, page_size=25)
    yield fake
    fake.close()


def test_lean_list_pages_and_decodes_keys(fake_s3):
    got = fake_s3.store().list("b", "ds/")
    assert [o.key for o in got] == sorted(fake_s3.objects)  # 3 pages of 25
    assert {o.key: o.size for o in got} == {k: len(v) for k, v in fake_s3.objects.items()}
    assert got[0].etag == '"e"'


def test_lean_download_many_reuses_connections(fake_s3, tmp_path):
    store = fake_s3.store()
    items = [(o.key, tmp_path / o.key, o.size) for o in store.list("b", "ds/")]
    assert store.download_many("b", items, concurrency=4) == sum(map(len, fake_s3.objects.values()))
    for key, data in fake_s3.objects.items():
        assert (tmp_path / key).read_bytes() == data
    assert fake_s3.connections <= 5  # keep-alive: at most one per worker (+ the list's), not one per object
    assert not list(tmp_path.rglob("*.part"))


def test_lean_download_retries_throttling_and_truncated_bodies(fake_s3, tmp_path):
    key = "ds/images/007.jpg"
    fake_s3.script[key] = [(503, "SlowDown"), "truncate", (500, "InternalError")]
    store = fake_s3.store()
    assert store.download("b", key, tmp_path / "x.jpg", expected_size=len(fake_s3.objects[key])) > 0
    assert (tmp_path / "x.jpg").read_bytes() == fake_s3.objects[key]
    assert fake_s3.gets.count(key) == 4
    assert list(tmp_path.iterdir()) == [tmp_path / "x.jpg"]  # no half-written .part left behind


def test_lean_download_classifies_errors(fake_s3, tmp_path):
    store = fake_s3.store()
    with pytest.raises(S3NotFound, match=r"s3://b/ds/missing"):
        store.download("b", "ds/missing", tmp_path / "m")
    with pytest.raises(S3BucketNotFound, match="does not exist"):
        store.download("nobucket", "k", tmp_path / "m")
    fake_s3.script["ds/a b+c.txt"] = [(403, "AccessDenied")] * 5
    with pytest.raises(S3AccessDenied):
        store.download("b", "ds/a b+c.txt", tmp_path / "m")
    assert fake_s3.gets.count("ds/a b+c.txt") == 1  # never retried
    fake_s3.script["ds/a b+c.txt"] = ["truncate"] * 1000
    t = time.monotonic()
    with pytest.raises(S3Unavailable, match=r"s3://b/ds/a b\+c.txt"):
        fake_s3.store(budget=0.5).download("b", "ds/a b+c.txt", tmp_path / "m")
    assert time.monotonic() - t < 5
    assert not (tmp_path / "m").exists() and not list(tmp_path.iterdir())


def test_lean_size_change_is_an_error_not_a_retry(fake_s3, tmp_path):
    with pytest.raises(TrainerError, match="changed while staging"):
        fake_s3.store().download("b", "ds/a b+c.txt", tmp_path / "m", expected_size=3)


def test_lean_unreachable_endpoint_is_s3_unavailable(tmp_path):
    from yolo_trainer.s3get import ObjectGetter

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = S3Store(None, retry_budget=0.5, getter=ObjectGetter(f"http://127.0.0.1:{port}", "us-east-1", "k", "s"))
    with pytest.raises(S3Unavailable, match="unavailable"):
        store.download("b", "k", tmp_path / "k")
    with pytest.raises(S3Unavailable):
        store.list("b", "")


def test_from_config_reads_through_the_getter_also_behind_a_proxy(monkeypatch, fake_s3, tmp_path):
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    store = S3Store.from_config(S3Config(endpoint="http://127.0.0.1:7333", region="eu-west-1"))
    assert store.getter.host == "127.0.0.1:7333" and store.getter.signer.region == "eu-west-1"
    # http_proxy: requests go to the proxy with absolute URLs (FakeS3 serves as the proxy here: it reads the path
    # and ignores the scheme and host), signed for the endpoint's own host.
    monkeypatch.setenv("http_proxy", fake_s3.url)
    store = S3Store.from_config(S3Config(endpoint="http://10.1.2.3:7333", region="us-east-1"))
    assert store.getter._proxy[:2] == ("127.0.0.1", int(fake_s3.url.rsplit(":", 1)[1]))
    assert [o.key for o in store.list("b", "ds/images/")][:1] == ["ds/images/000.jpg"]
    assert store.get_bytes("b", "ds/a b+c.txt") == b"plus and space"
    monkeypatch.setenv("no_proxy", "10.1.2.3")
    assert S3Store.from_config(S3Config(endpoint="http://10.1.2.3:7333")).getter._proxy is None


def test_lean_download_many_stops_at_the_first_failure_and_raises_it(fake_s3, tmp_path):
    store = fake_s3.store()
    objs = store.list("b", "ds/images/")
    fake_s3.script[objs[10].key] = [(403, "AccessDenied")]
    with pytest.raises(S3AccessDenied, match=objs[10].key):
        store.download_many("b", [(o.key, tmp_path / o.key, o.size) for o in objs], concurrency=2)
    assert len(fake_s3.gets) < len(objs) - 5  # the rest was dropped, not downloaded


def _tar(entries: dict[str, bytes], link: tuple[str, str] | None = None) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tf.addfile(info)
    return buf.getvalue()


def test_tar_is_extracted_while_it_streams_and_a_broken_stream_restarts_cleanly(fake_s3, tmp_path):
    from yolo_trainer.dataset import Limits, stage_dataset

    files = {"ds/data.yaml": b"names: [a]\n", **{f"ds/images/{i}.jpg": bytes([i]) * 5000 for i in range(30)}}
    fake_s3.objects["d.tar.gz"] = _tar(files, link=("ds/images/copy.jpg", "3.jpg"))
    fake_s3.script["d.tar.gz"] = ["truncate"]  # the first GET breaks off half way
    dest = tmp_path / "work" / "dataset"
    data_yaml = stage_dataset(fake_s3.store(), "s3://b/d.tar.gz", dest, Limits(1 << 30, 1000))
    assert data_yaml == dest / "ds" / "data.yaml"
    assert fake_s3.gets.count("d.tar.gz") == 2
    got = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert got == {**files, "ds/images/copy.jpg": files["ds/images/3.jpg"]}
    assert not (dest / "ds" / "images" / "copy.jpg").is_symlink()
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["dataset"]  # no temporary archive


def test_streamed_tar_keeps_the_safety_checks_and_is_not_retried(fake_s3, tmp_path):
    from yolo_contract.exitcodes import DatasetInvalid
    from yolo_trainer.dataset import Limits, stage_dataset

    fake_s3.objects["slip.tar.gz"] = _tar({"data.yaml": b"x", "../evil.txt": b"evil"})
    with pytest.raises(DatasetInvalid, match="escapes"):
        stage_dataset(fake_s3.store(), "s3://b/slip.tar.gz", tmp_path / "w" / "d", Limits(1 << 30, 1000))
    assert fake_s3.gets.count("slip.tar.gz") == 1 and not (tmp_path / "w" / "evil.txt").exists()
    fake_s3.objects["bomb.tar.gz"] = _tar({"data.yaml": b"x", "big.bin": bytes(1 << 20)})
    with pytest.raises(DatasetInvalid, match="more than 100000 bytes"):
        stage_dataset(fake_s3.store(), "s3://b/bomb.tar.gz", tmp_path / "w" / "d", Limits(100_000, 1000))
    fake_s3.objects["out.tar.gz"] = _tar({"data.yaml": b"x"}, link=("l", "../../etc/passwd"))
    with pytest.raises(DatasetInvalid, match="points outside"):
        stage_dataset(fake_s3.store(), "s3://b/out.tar.gz", tmp_path / "w" / "d", Limits(1 << 30, 1000))
    with pytest.raises(DatasetInvalid, match="does not exist"):
        stage_dataset(fake_s3.store(), "s3://b/missing.tar", tmp_path / "w" / "d", Limits(1 << 30, 1000))


def test_lean_head_gives_the_size_over_a_kept_alive_connection(fake_s3):
    store = fake_s3.store()
    key = "ds/images/007.jpg"
    assert store.size("b", key) == len(fake_s3.objects[key])
    assert store.size("b", "ds/a b+c.txt") == len(b"plus and space")
    with pytest.raises(S3NotFound, match=r"s3://b/ds/missing"):
        store.size("b", "ds/missing")
    assert fake_s3.heads == [key, "ds/a b+c.txt", "ds/missing"] and fake_s3.gets == []
    assert fake_s3.connections == 1
    assert store.head_etag("b", key) == '"e"'
    assert store.get_bytes("b", key) == fake_s3.objects[key]
    with pytest.raises(TrainerError, match="more than the 10 allowed"):
        store.get_bytes("b", key, max_size=10)
    store.check_bucket("b", "ds/")
    with pytest.raises(S3BucketNotFound, match=r"does not exist.*spec\.output"):
        store.check_bucket("nobucket", field="spec.output")


def test_streamed_tar_that_cannot_fit_fails_before_its_get(fake_s3, tmp_path):
    import shutil

    from yolo_contract.exitcodes import ScratchTooSmall
    from yolo_trainer.dataset import SCRATCH_HEADROOM_BYTES, Limits, Scratch, stage_dataset

    fake_s3.objects["d.tar.gz"] = _tar({"data.yaml": bytes(range(256)) * 400})
    size = len(fake_s3.objects["d.tar.gz"])
    free = lambda path: shutil._ntuple_diskusage(1 << 40, 0, 1 << 40)  # noqa: E731
    scratch = Scratch(budget=SCRATCH_HEADROOM_BYTES + size - 1, disk_usage=free)
    with pytest.raises(ScratchTooSmall, match=r"spec.resources.scratchSize is 2.0 GiB; set it to at least 3Gi"):
        stage_dataset(fake_s3.store(), "s3://b/d.tar.gz", tmp_path / "d", Limits(1 << 30, 1000), scratch=scratch)
    assert fake_s3.heads == ["d.tar.gz"] and fake_s3.gets == []


def test_the_writer_is_built_at_the_first_write_when_the_endpoint_is_explicit(monkeypatch):
    import yolo_trainer.s3 as s3mod

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    built = []
    real = s3mod.make_client
    monkeypatch.setattr(s3mod, "make_client", lambda *a, **kw: built.append(1) or real(*a, **kw))
    store = S3Store.from_config(S3Config(endpoint="http://127.0.0.1:1/", region="eu-west-1"))
    assert built == [] and store.getter.signer.region == "eu-west-1"
    assert (store.getter.hostname, store.getter.port) == ("127.0.0.1", 1)
    assert store.client.meta.endpoint_url == "http://127.0.0.1:1/" and store.client is store.client
    assert built == [1]
    aws = S3Store.from_config(S3Config(region="eu-west-1"))  # botocore resolves the AWS endpoint: built now
    assert built == [1, 1] and aws.getter.hostname == "s3.eu-west-1.amazonaws.com"


class _RegionServer:
    """Answers HeadBucket as a store might: ``status`` with ``x-amz-bucket-region: region`` (None: without it)."""

    def __init__(self, status: int, region: str | None):
        import http.server
        import threading

        self.heads: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                outer.heads.append(self.path)
                self.send_response(status)
                if region:
                    self.send_header("x-amz-bucket-region", region)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("status", "header", "expected"),
    [
        (200, "eu-west-3", "eu-west-3"),  # the bucket answers (MinIO, AWS in us-east-1)
        (301, "ap-south-1", "ap-south-1"),  # AWS: PermanentRedirect, the bucket is elsewhere
        (400, "eu-central-1", "eu-central-1"),  # AWS: AuthorizationHeaderMalformed (signed for us-east-1)
        (403, "us-west-2", "us-west-2"),  # AWS: keys not allowed on the bucket, its region still named
        (200, None, None),  # a store that names no region: the caller uses us-east-1
        (404, None, None),  # no such bucket: the preflight's bucket check says so, naming the field
    ],
)
def test_discover_region_reads_the_bucket_region_header(monkeypatch, status, header, expected):
    from yolo_trainer.s3 import discover_region

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    srv = _RegionServer(status, header)
    try:
        assert discover_region(S3Config(endpoint=srv.url), "runs") == expected
        assert srv.heads == ["/runs"]
    finally:
        srv.close()


def test_a_given_region_is_used_as_given_and_an_unset_one_is_the_output_buckets(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    for var in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    srv = _RegionServer(400, "eu-central-1")
    try:
        given = S3Store.from_config(S3Config(endpoint=srv.url, region="eu-west-1"), region_bucket="runs")
        assert given.getter.signer.region == "eu-west-1" and srv.heads == []  # no request: the spec decides
        found = S3Store.from_config(S3Config(endpoint=srv.url), region_bucket="runs")
        assert found.getter.signer.region == found.hints.region == "eu-central-1" and srv.heads == ["/runs"]
        assert found.hints.region_discovered_from == "runs"
        silent = _RegionServer(200, None)
        try:
            fallback = S3Store.from_config(S3Config(endpoint=silent.url), region_bucket="runs")
            assert fallback.getter.signer.region == "us-east-1" and fallback.hints.region_discovered_from is None
        finally:
            silent.close()
    finally:
        srv.close()
    # Unreachable: no region learnt, us-east-1; the bucket check then reports S3Unreachable as before.
    dead = S3Store.from_config(S3Config(endpoint="http://127.0.0.1:1"), region_bucket="runs")
    assert dead.getter.signer.region == "us-east-1"


def test_a_discovered_region_that_is_wrong_for_another_bucket_says_it_was_discovered():
    from yolo_trainer.s3 import _wrong_region

    hints = S3Hints(region="eu-central-1", region_discovered_from="runs")
    err = _wrong_region("AuthorizationHeaderMalformed", "wrong region", {"Region": "us-west-2"}, {}, "s3://data",
                        hints)  # fmt: skip
    assert "spec.s3.region is unset and bucket runs is in 'eu-central-1'" in str(err)
    assert "this bucket is in 'us-west-2'" in str(err) and "must share a region" in str(err)
