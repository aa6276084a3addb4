"""console-plugin/serve.py, the console plugin image's server: HTTPS with the mounted certificate, the
manifest never cached and the hashed bundles cached for good, no directory listings, and a clear error when
the certificate Secret or the build is missing."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
SERVE = Path(__file__).resolve().parents[2] / "console-plugin" / "serve.py"


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    return cert, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serves_the_bundle_over_tls_with_the_mounted_certificate(tmp_path, tls):
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "plugin-manifest.json").write_text(json.dumps({"name": "yolo-operator-console-plugin"}))
    (dist / "plugin-entry.0123abcd.min.js").write_text("__load_plugin_entry__('x', {});")
    cert, key = tls
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SERVE), "--dir", str(dist), "--port", str(port), "--cert", str(cert),
                             "--key", str(key)], stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        ctx = ssl.create_default_context(cafile=str(cert))  # verifies the chain and the name: real TLS
        base = f"https://localhost:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = urllib.request.urlopen(f"{base}/plugin-manifest.json", context=ctx, timeout=5)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr and proc.stderr.read()
                time.sleep(0.2)
        assert json.loads(resp.read())["name"] == "yolo-operator-console-plugin"
        assert resp.headers["Cache-Control"] == "no-cache"
        entry = urllib.request.urlopen(f"{base}/plugin-entry.0123abcd.min.js", context=ctx, timeout=5)
        assert "immutable" in entry.headers["Cache-Control"]
        assert entry.headers["Content-Type"] in ("application/javascript", "text/javascript")
        with pytest.raises(urllib.error.HTTPError) as listing:
            urllib.request.urlopen(f"{base}/", context=ctx, timeout=5)
        assert listing.value.code == 404
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP is refused: TLS only
            urllib.request.urlopen(f"http://localhost:{port}/plugin-manifest.json", timeout=5)
        silent = socket.create_connection(("localhost", port))  # a client that never sends a byte
        try:  # holds up no one
            assert urllib.request.urlopen(f"{base}/plugin-manifest.json", context=ctx, timeout=5).status == 200
        finally:
            silent.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_names_the_fix_when_the_certificate_or_the_build_is_missing(tmp_path, tls):
    cert, key = tls
    missing = subprocess.run([sys.executable, str(SERVE), "--dir", str(tmp_path), "--cert", str(tmp_path / "no.crt"),
                              "--key", str(key)], capture_output=True, text=True, timeout=30)  # fmt: skip
    assert missing.returncode != 0 and "mount the serving certificate Secret" in missing.stderr
    unbuilt = subprocess.run([sys.executable, str(SERVE), "--dir", str(tmp_path), "--cert", str(cert), "--key",
                              str(key)], capture_output=True, text=True, timeout=30)  # fmt: skip
    assert unbuilt.returncode != 0 and "make console-plugin" in unbuilt.stderr
