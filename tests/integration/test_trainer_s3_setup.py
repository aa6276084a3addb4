"""A new user's S3 setup, right and wrong, with real ``yolo-trainer`` processes against the test bed's S3.

Every misconfiguration ends non-retriable (the podFailurePolicy fails the Job at once) with a termination message
naming the spec field to fix, in seconds; ambient credentials (here from a fake EC2 instance metadata service)
train a job without any keys in the pod. Each failing case's time from trainer start to exit goes into a table,
printed at the end of the module (``-s``) and written to ``<pytest basetemp>/s3-setup-table.md``.

What the bed's SeaweedFS does, and how the tests cope:
- it ignores the signing region, so a wrong region is played by a tiny fake S3 answering as AWS does
  (400 ``AuthorizationHeaderMalformed`` with ``<Region>``);
- it rejects a request carrying ``x-amz-security-token`` with static keys (``InvalidAccessKeyId``), so the
  fake instance metadata service returns ``"Token": ""`` (botocore requires the field, and sends no header for
  an empty token); the signer's session-token path is checked against botocore's in tests/unit/test_trainer_s3.py;
- TLS is a test-local TLS-terminating proxy in front of it, with certificates from the ``openssl`` CLI.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from yolo_contract.exitcodes import ExitCode

from tests.trainer_fixtures import Result, TrainerRunner, list_keys

pytestmark = pytest.mark.integration

FIGURES: list[tuple[str, str, float, str]] = []  # (case, "exit N Reason", seconds to fail, note)


@pytest.fixture(scope="module", autouse=True)
def table(tmp_path_factory):
    yield
    if not FIGURES:
        return
    lines = ["| misconfiguration | exit code / reason | time to fail (trainer start to exit) | note |",
             "| --- | --- | --- | --- |"]  # fmt: skip
    lines += [f"| {case} | {reason} | {took:.1f} s | {note} |" for case, reason, took, note in FIGURES]
    text = "\n".join(lines)
    out = tmp_path_factory.getbasetemp() / "s3-setup-table.md"
    out.write_text(text + "\n")
    print(f"\nS3-SETUP-TABLE ({out}):\n{text}")


def timed(runner: TrainerRunner, cfg: dict, **env) -> tuple[Result, float]:
    t0 = time.monotonic()
    res = runner.run(cfg, **env)
    return res, time.monotonic() - t0


def expect_failure(case: str, res: Result, took: float, code: ExitCode, *needles: str, note: str = "") -> None:
    assert res.rc == int(code), f"rc={res.rc} {res.termination}\n{res.stderr[-3000:]}"
    assert not code.retriable, code
    assert res.termination.startswith(f"{code.reason}: "), res.termination
    for n in needles:
        assert n in res.termination, f"{n!r} not in {res.termination!r}"
    assert "Traceback" not in res.stderr
    assert not res.of("epoch")
    FIGURES.append((case, f"{int(code)} `{code.reason}`", took, note))
    print(f"S3-SETUP-FIGURE {case}: exit {int(code)} {code.reason} after {took:.1f}s: {res.termination}")


# --- keys, buckets, prefixes ---------------------------------------------------------------------------------


def test_baseline_a_failure_just_before_the_first_s3_request(runner, good, bucket):
    """What every row below includes: starting the trainer (Python, torch and Ultralytics imports, the
    hyperparameter check) up to the preflight's first S3 request, measured with an unknown export format,
    refused just before it."""
    cfg = runner.config("baseline", "yolov8n.yaml", good, f"s3://{bucket}/out")
    cfg["exportFormats"] = ["no-such-format"]
    res, took = timed(runner, cfg)
    expect_failure("(baseline: start-up to the first S3 request, no S3 involved)", res, took,
                   ExitCode.CONFIG_INVALID, "no-such-format", note="trainer start-up alone")  # fmt: skip


def test_wrong_access_key(runner, good, bucket):
    res, took = timed(runner, runner.config("badkey", "yolov8n.yaml", good, f"s3://{bucket}/out"),
                      access_key="AKIDONTEXIST", secret_key="nope")  # fmt: skip
    expect_failure("wrong access key (`InvalidAccessKeyId`)", res, took, ExitCode.S3_ACCESS_DENIED,
                   "InvalidAccessKeyId", "spec.s3.credentialsSecretRef")  # fmt: skip


def test_wrong_secret_key(runner, good, bucket, s3_env):
    res, took = timed(runner, runner.config("badsecret", "yolov8n.yaml", good, f"s3://{bucket}/out"),
                      access_key=s3_env.access_key, secret_key="not-the-secret")  # fmt: skip
    expect_failure("wrong secret key (`SignatureDoesNotMatch`)", res, took, ExitCode.S3_ACCESS_DENIED,
                   "SignatureDoesNotMatch", "spec.s3.credentialsSecretRef")  # fmt: skip


def test_no_credentials_at_all_is_anonymous_and_says_so(runner, good, bucket):
    res, took = timed(runner, runner.config("anon", "yolov8n.yaml", good, f"s3://{bucket}/out"),
                      keys=False, AWS_EC2_METADATA_DISABLED="true")  # fmt: skip
    assert "ANONYMOUS" in res.stderr, res.stderr[-2000:]
    expect_failure("no credentials anywhere (anonymous, refused by the store)", res, took,
                   ExitCode.S3_ACCESS_DENIED, "anonymous", "spec.s3.credentialsSecretRef")  # fmt: skip


def test_missing_output_bucket(runner, good):
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    res, took = timed(runner, runner.config("noout", "yolov8n.yaml", good, f"s3://{missing}/out"))
    expect_failure("output bucket missing", res, took, ExitCode.S3_BUCKET_NOT_FOUND, missing, "spec.output")


def test_missing_dataset_bucket(runner, bucket):
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    res, took = timed(runner, runner.config("nods", "yolov8n.yaml", f"s3://{missing}/ds", f"s3://{bucket}/out"))
    expect_failure("dataset bucket missing", res, took, ExitCode.S3_BUCKET_NOT_FOUND, missing, "spec.dataset")


def test_missing_dataset_prefix(runner, bucket):
    uri = f"s3://{bucket}/no-such-prefix"
    res, took = timed(runner, runner.config("noprefix", "yolov8n.yaml", uri, f"s3://{bucket}/out"))
    expect_failure("dataset prefix missing", res, took, ExitCode.DATASET_INVALID, uri, "spec.dataset")


def test_missing_dataset_archive(runner, bucket):
    uri = f"s3://{bucket}/no-such-archive.zip"
    res, took = timed(runner, runner.config("noarchive", "yolov8n.yaml", uri, f"s3://{bucket}/out"))
    expect_failure("dataset archive key missing", res, took, ExitCode.DATASET_INVALID, uri, "spec.dataset")


# --- region ----------------------------------------------------------------------------------------------------


class FakeAWS:
    """Answers every request as AWS S3 does when the request was signed for the wrong region."""

    def __init__(self, region: str):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                body = (
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AuthorizationHeaderMalformed</Code>"
                    "<Message>The authorization header is malformed; the region 'us-east-1' is wrong; expecting "
                    f"'{region}'</Message><Region>{region}</Region><RequestId>R</RequestId><HostId>H</HostId>"
                    "</Error>"
                ).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/xml")
                self.send_header("x-amz-bucket-region", region)
                self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_DELETE = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_wrong_region(runner, good, bucket, s3_client, s3_env):
    import boto3

    # The bed's SeaweedFS does not check the signing region: a client signing for another region works.
    other = boto3.client("s3", endpoint_url=s3_env.endpoint, region_name="eu-central-1",
                         aws_access_key_id=s3_env.access_key, aws_secret_access_key=s3_env.secret_key)  # fmt: skip
    assert other.list_objects_v2(Bucket=bucket, MaxKeys=1)["ResponseMetadata"]["HTTPStatusCode"] == 200
    fake = FakeAWS("eu-central-1")
    try:
        cfg = runner.config("region", "yolov8n.yaml", good, f"s3://{bucket}/out")
        cfg["s3"].update(endpoint=fake.endpoint, region="us-east-1")
        res, took = timed(runner, cfg)
    finally:
        fake.close()
    expect_failure("wrong region", res, took, ExitCode.S3_WRONG_REGION, "spec.s3.region: eu-central-1",
                   "'us-east-1'", note="a fake S3 answering as AWS (SeaweedFS ignores the region)")  # fmt: skip


# --- TLS -------------------------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost and one for another name, signed by it."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=yolo test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    for name, san in (("good", "IP:127.0.0.1,DNS:localhost"), ("wrong", "DNS:s3.wrong-name.example")):
        (d / f"{name}.ext").write_text(
            f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        )
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return d


class TLSProxy:
    """TLS in front of the bed's plain-HTTP S3: terminates TLS with ``cert`` and pipes the bytes through."""

    def __init__(self, cert: Path, key: Path, upstream: tuple[str, int]):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.upstream = upstream
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"https://127.0.0.1:{self.sock.getsockname()[1]}"
        self.handshakes_failed = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshakes_failed += 1
            conn.close()
            return
        up = socket.create_connection(self.upstream, timeout=30)
        try:
            while True:  # one thread per connection: an SSL object is not shared between threads
                ready = [tls] if tls.pending() else select.select([tls, up], [], [], 60)[0]
                if not ready:
                    return
                for s in ready:
                    data = s.recv(1 << 16)
                    if not data:
                        return
                    (up if s is tls else tls).sendall(data)
        except (ssl.SSLError, OSError):
            return
        finally:
            up.close()
            tls.close()

    def close(self) -> None:
        self._closed = True
        self.sock.close()


def _upstream(s3_env) -> tuple[str, int]:
    parts = urlsplit(s3_env.endpoint)
    return parts.hostname, parts.port or 80


def test_tls_certificate_not_trusted_then_trusted_with_the_ca_bundle(runner, good, bucket, s3_client, s3_env, pki):
    proxy = TLSProxy(pki / "good.crt", pki / "good.key", _upstream(s3_env))
    try:
        cfg = runner.config("tls", "yolov8n.yaml", good, f"s3://{bucket}/out", epochs=1)
        cfg["s3"]["endpoint"] = proxy.endpoint
        res, took = timed(runner, cfg)
        expect_failure("TLS: certificate not trusted (no `caBundle`)", res, took, ExitCode.S3_TLS_FAILED,
                       "spec.s3.caBundle", proxy.endpoint, "not trusted")  # fmt: skip
        cfg["s3"]["caBundle"] = str(pki / "ca.crt")  # the pod's path of spec.s3.caBundle
        res, took = timed(runner, cfg)
        assert res.rc == 0, f"rc={res.rc} {res.termination}\n{res.stderr[-3000:]}"
        assert res.of("done") and "out/ns1/tls/metrics.json" in list_keys(s3_client, bucket, "out/ns1/tls/")
        print(f"S3-SETUP-FIGURE TLS with spec.s3.caBundle: trained 1 epoch and published in {took:.1f}s")
    finally:
        proxy.close()


def test_tls_certificate_for_another_host_name(runner, good, bucket, s3_env, pki):
    proxy = TLSProxy(pki / "wrong.crt", pki / "wrong.key", _upstream(s3_env))
    try:
        cfg = runner.config("tlsname", "yolov8n.yaml", good, f"s3://{bucket}/out")
        cfg["s3"].update(endpoint=proxy.endpoint, caBundle=str(pki / "ca.crt"))
        res, took = timed(runner, cfg)
    finally:
        proxy.close()
    expect_failure("TLS: certificate for another host name", res, took, ExitCode.S3_TLS_FAILED,
                   "spec.s3.endpoint", "host name")  # fmt: skip


# --- unreachable endpoints -------------------------------------------------------------------------------------
# With the runner's 2 s retry budget (YOLO_TRAINER_S3_RETRY_BUDGET); a pod has 120 s by default.


def test_endpoint_connection_refused(runner, good, bucket):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = runner.config("refused", "yolov8n.yaml", good, f"s3://{bucket}/out")
    cfg["s3"]["endpoint"] = f"http://127.0.0.1:{port}"
    res, took = timed(runner, cfg, YOLO_TRAINER_S3_RETRY_BUDGET="2")
    expect_failure("endpoint refuses connections", res, took, ExitCode.S3_UNREACHABLE, "refused",
                   "spec.s3.endpoint", note="retry budget 2 s (default 120 s)")  # fmt: skip


def test_endpoint_name_does_not_resolve(runner, good, bucket):
    cfg = runner.config("nodns", "yolov8n.yaml", good, f"s3://{bucket}/out")
    cfg["s3"]["endpoint"] = "http://s3.yolo-operator-test.invalid:9000"
    res, took = timed(runner, cfg, YOLO_TRAINER_S3_RETRY_BUDGET="2")
    expect_failure("endpoint host name does not resolve", res, took, ExitCode.S3_UNREACHABLE, "does not resolve",
                   "spec.s3.endpoint", note="retry budget 2 s (default 120 s)")  # fmt: skip


@pytest.mark.timeout(180)
def test_endpoint_times_out(runner, good, bucket):
    """A listener whose accept queue is full drops every SYN: connecting times out (10 s a try)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=5)  # fills the queue (never accepted)
    try:
        cfg = runner.config("timeout", "yolov8n.yaml", good, f"s3://{bucket}/out")
        cfg["s3"]["endpoint"] = f"http://127.0.0.1:{port}"
        res, took = timed(runner, cfg, YOLO_TRAINER_S3_RETRY_BUDGET="2")
    finally:
        filler.close()
        listener.close()
    expect_failure("endpoint times out", res, took, ExitCode.S3_UNREACHABLE, "timed out", "spec.s3.endpoint",
                   note="retry budget 2 s (default 120 s); 10 s connect timeout a try")  # fmt: skip


# --- ambient credentials -----------------------------------------------------------------------------------------


class FakeIMDS:
    """EC2's instance metadata service, IMDSv2: a session token from PUT /latest/api/token, then the role's
    credentials (here: the bed's keys, expiring far in the future)."""

    ROLE = "yolo-test-role"
    SESSION = "imds-session-token"

    def __init__(self, access_key: str, secret_key: str, token: str):
        self.requests: list[tuple[str, str]] = []
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self):
                imds.requests.append(("PUT", self.path))
                if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self._send(200, imds.SESSION)
                self._send(404, "")

            def do_GET(self):
                imds.requests.append(("GET", self.path))
                if self.headers.get("X-aws-ec2-metadata-token") != imds.SESSION:
                    return self._send(401, "")
                base = "/latest/meta-data/iam/security-credentials/"
                if self.path == base:
                    return self._send(200, imds.ROLE)
                if self.path == base + imds.ROLE:
                    return self._send(200, json.dumps({
                        "Code": "Success", "LastUpdated": "2026-12-01T00:00:00Z", "Type": "AWS-HMAC",
                        "AccessKeyId": access_key, "SecretAccessKey": secret_key, "Token": token,
                        "Expiration": "2099-01-01T00:00:00Z",
                    }))  # fmt: skip
                self._send(404, "")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _bed_accepts_a_session_token(s3_env, bucket: str) -> bool:
    import boto3
    from botocore.exceptions import ClientError

    c = boto3.client("s3", endpoint_url=s3_env.endpoint, region_name=s3_env.region,
                     aws_access_key_id=s3_env.access_key, aws_secret_access_key=s3_env.secret_key,
                     aws_session_token="some-session-token")  # fmt: skip
    try:
        c.list_objects_v2(Bucket=bucket, MaxKeys=1)
        return True
    except ClientError as e:
        print(f"the bed's S3 refuses x-amz-security-token with static keys: {e.response['Error']['Code']}")
        return False


def test_ambient_credentials_from_instance_metadata_train_a_job(runner, good, bucket, s3_client, s3_env):
    token = "some-session-token" if _bed_accepts_a_session_token(s3_env, bucket) else ""
    imds = FakeIMDS(s3_env.access_key, s3_env.secret_key, token)
    try:
        cfg = runner.config("ambient", "yolov8n.yaml", good, f"s3://{bucket}/out", epochs=1)
        res, took = timed(runner, cfg, keys=False, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.endpoint)
    finally:
        imds.close()
    assert res.rc == 0, f"rc={res.rc} {res.termination}\n{res.stderr[-3000:]}"
    assert ("PUT", "/latest/api/token") in imds.requests, imds.requests
    assert ("GET", f"/latest/meta-data/iam/security-credentials/{FakeIMDS.ROLE}") in imds.requests, imds.requests
    assert "ambient, from the AWS credential chain (iam-role)" in res.stderr
    assert res.of("dataset") and res.of("done")
    assert "out/ns1/ambient/metrics.json" in list_keys(s3_client, bucket, "out/ns1/ambient/")
    print(f"S3-SETUP-FIGURE ambient credentials (fake IMDSv2, Token {token!r}): 1 epoch trained and published "
          f"in {took:.1f}s")  # fmt: skip
