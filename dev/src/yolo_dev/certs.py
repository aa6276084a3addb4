"""Throwaway TLS for servers the tests run: a CA and one serving certificate it signs (openssl, two days)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def generate_certs(d: Path, ips: tuple[str, ...] = ("127.0.0.1",), names: tuple[str, ...] = ("localhost",),
                   ca_name: str = "yolo-testbed-ca") -> tuple[Path, Path, Path]:  # fmt: skip
    """A CA and a serving certificate for ``ips`` and ``names`` signed by it: (ca.crt, tls.crt, tls.key)."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, crt = d / "ca.key", d / "ca.crt", d / "tls.key", d / "tls.csr", d / "tls.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
             "-days", "2", "-subj", f"/CN={ca_name}")  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={ips[0] if ips else names[0]}")  # fmt: skip
    ext = d / "san.ext"
    san = ",".join([*(f"IP:{ip}" for ip in ips), *(f"DNS:{n}" for n in names)])
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(crt), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return ca, crt, key
