"""S3 error classification, retry budget and URI handling (no server: fakes and a closed port)."""

from __future__ import annotations

import random
import socket
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from yolo_trainer.config import S3Config
from yolo_trainer.exitcodes import ConfigInvalid, ExitCode, S3AccessDenied, S3Unavailable, TrainerError
from yolo_trainer.s3 import S3NotFound, S3Store, backoff_delays, classify_error, make_client, parse_s3_uri

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
        ("NoSuchBucket", 404, S3AccessDenied),
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


def test_missing_bucket_message_names_bucket():
    got = classify_error(client_error("NoSuchBucket", 404), "nobucket", "k")
    assert "nobucket" in str(got) and "does not exist" in str(got)


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


def test_unreachable_endpoint_is_s3_unavailable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = make_client(
        S3Config(endpoint=f"http://127.0.0.1:{port}"),
        environ={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
    )
    store = S3Store(client, retry_budget=1.0)
    with pytest.raises(S3Unavailable, match=r"unavailable"):
        store.check_bucket("bucket")


def test_credentials_must_come_in_pairs():
    with pytest.raises(ConfigInvalid, match=r"both"):
        make_client(S3Config(endpoint="http://127.0.0.1:1"), environ={"AWS_ACCESS_KEY_ID": "k"})
