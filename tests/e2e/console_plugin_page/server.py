"""The test page's server (127.0.0.1, plain HTTP): the page and its shim, the plugin's built dist/ where the
console serves plugins (/api/plugins/<name>/, the publicPath webpack baked in), React's UMD builds and
PatternFly's CSS from console-plugin/node_modules, and /k8s/<path> forwarded to a real API server (GET only)."""

from __future__ import annotations

import mimetypes
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PAGE = Path(__file__).parent
ROOT = PAGE.parents[2]
PLUGIN = ROOT / "console-plugin"
PLUGIN_BASE = "/api/plugins/yolo-operator-console-plugin/"
# Only what the page needs from node_modules (not the whole tree).
NODE_MODULES = ("react/umd/", "react-dom/umd/", "@patternfly/react-core/dist/styles/", "@patternfly/react-styles/css/")

#: (path with query) -> (HTTP status, JSON body bytes)
ApiGet = Callable[[str], tuple[int, bytes]]


def _under(base: Path, rel: str) -> Path | None:
    path = (base / rel).resolve()
    return path if path.is_file() and path.is_relative_to(base.resolve()) else None


class PageServer:
    def __init__(self, api_get: ApiGet):
        self.api_get = api_get
        self.api_requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path.startswith("/k8s/"):
                    server.api_requests += 1
                    status, body = server.api_get(self.path[len("/k8s") :])
                    return self._send(status, body, "application/json")
                if path == "/":
                    return self._file(PAGE / "index.html")
                for prefix, base in (("/page/", PAGE), (PLUGIN_BASE, PLUGIN / "dist")):
                    if path.startswith(prefix):
                        return self._file(_under(base, path[len(prefix) :]))
                if path.startswith("/node_modules/"):
                    rel = path[len("/node_modules/") :]
                    if rel.startswith(NODE_MODULES):
                        return self._file(_under(PLUGIN / "node_modules", rel))
                self._send(404, b"not found", "text/plain")

            def _file(self, file: Path | None):
                if file is None:
                    return self._send(404, b"not found", "text/plain")
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                self._send(200, file.read_bytes(), kind)

            def _send(self, status: int, body: bytes, kind: str):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
