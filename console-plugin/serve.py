"""Serves the console plugin's dist/ over TLS, as the OpenShift console expects of a ConsolePlugin's backend
Service (port 9443). The certificate and key come from a mounted Secret (on OpenShift the service-serving
certificate: the Service annotation service.beta.openshift.io/serving-cert-secret-name). Standard library only,
so the image is the project's Python base plus this file and dist/.

    python serve.py [--dir DIST] [--port 9443] [--cert /var/serving-cert/tls.crt] [--key /var/serving-cert/tls.key]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import ssl
import sys
from pathlib import Path


class Handler(http.server.SimpleHTTPRequestHandler):
    # The console fetches plugin-manifest.json afresh; the hashed bundles may be cached for good.
    def end_headers(self) -> None:
        immutable = self.path.endswith(".min.js") and "plugin-manifest" not in self.path
        self.send_header("Cache-Control", "public, max-age=31536000, immutable" if immutable else "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def list_directory(self, path):  # no directory listings
        self.send_error(404)
        return None

    def log_message(self, fmt: str, *args) -> None:
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default=str(Path(__file__).parent / "dist"))
    p.add_argument("--port", type=int, default=9443)
    p.add_argument("--cert", default="/var/serving-cert/tls.crt")
    p.add_argument("--key", default="/var/serving-cert/tls.key")
    args = p.parse_args(argv)
    for f in (args.cert, args.key):
        if not Path(f).is_file():
            sys.exit(f"{f} is missing: mount the serving certificate Secret (tls.crt, tls.key) at its directory")
    if not (Path(args.dir) / "plugin-manifest.json").is_file():
        sys.exit(f"{args.dir}/plugin-manifest.json is missing: build the plugin first (make console-plugin)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.cert, args.key)
    server = http.server.ThreadingHTTPServer(("", args.port), functools.partial(Handler, directory=args.dir))
    # The handshake happens on the first read, in the connection's own thread: a client that connects and
    # says nothing (or speaks plain HTTP) never holds up the accept loop.
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    print(f"serving {args.dir} on https://0.0.0.0:{args.port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
