"""spec.s3.region: used as given when set; unset, the output bucket's region as S3 names it.

Against the test bed's S3. SeaweedFS names no region (its answers carry no ``x-amz-bucket-region``) and ignores
the signing region, so the AWS behaviour is played by tests/fault/faultproxy.py in front of it, adding the header
AWS sends on every HeadBucket answer. Prints REGION-FIGURE lines (``-s``).
"""

from __future__ import annotations

import pytest
from yolo_contract.trainer_config import S3Config
from yolo_trainer.s3 import S3Store

from tests.fault.faultproxy import FaultProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def keys(monkeypatch, s3_env):
    for var in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_env.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret_key)


def heads(proxy: FaultProxy, bucket: str) -> list[str]:
    return [r.path for r in proxy.forwarded("HEAD") if r.path.rstrip("/") == f"/{bucket}"]


def roundtrip(store: S3Store, bucket: str) -> None:
    """The preflight's bucket check, a write and a read, all signed for the store's region."""
    store.check_bucket(bucket, "", "spec.output")
    store.put_bytes(bucket, "region/probe.txt", b"ok")
    assert store.get_bytes(bucket, "region/probe.txt") == b"ok"


def test_the_beds_s3_names_no_region_so_unset_is_us_east_1(keys, s3_env, bucket):
    with FaultProxy(s3_env.endpoint) as proxy:
        store = S3Store.from_config(S3Config(endpoint=proxy.endpoint), region_bucket=bucket)
        print(f"REGION-FIGURE SeaweedFS, region unset: HeadBucket {heads(proxy, bucket)} -> "
              f"{store.getter.signer.region} (discovered from: {store.hints.region_discovered_from})")  # fmt: skip
        assert heads(proxy, bucket) == [f"/{bucket}"]
        assert store.getter.signer.region == "us-east-1" and store.hints.region_discovered_from is None
        roundtrip(store, bucket)


def test_region_discovered_from_the_bucket_region_header(keys, s3_env, bucket):
    with FaultProxy(s3_env.endpoint) as proxy:
        proxy.response_headers = {"x-amz-bucket-region": "eu-central-1"}  # as AWS answers HeadBucket
        store = S3Store.from_config(S3Config(endpoint=proxy.endpoint), region_bucket=bucket)
        found = f"{store.getter.signer.region} (discovered from bucket {store.hints.region_discovered_from})"
        print(f"REGION-FIGURE region unset, S3 answers x-amz-bucket-region: eu-central-1 -> {found}")
        assert heads(proxy, bucket) == [f"/{bucket}"]
        assert store.getter.signer.region == store.hints.region == "eu-central-1"
        assert store.client.meta.region_name == "eu-central-1"  # the boto3 writer signs for it too
        roundtrip(store, bucket)


def test_a_given_region_is_used_without_asking(keys, s3_env, bucket):
    with FaultProxy(s3_env.endpoint) as proxy:
        proxy.response_headers = {"x-amz-bucket-region": "eu-central-1"}
        store = S3Store.from_config(S3Config(endpoint=proxy.endpoint, region="ap-south-1"), region_bucket=bucket)
        print(f"REGION-FIGURE region ap-south-1 given: HeadBucket {heads(proxy, bucket)} -> "
              f"{store.getter.signer.region}")  # fmt: skip
        assert heads(proxy, bucket) == [] and store.getter.signer.region == "ap-south-1"
        roundtrip(store, bucket)
