"""A fault-injecting TCP proxy for S3 (or any plain-HTTP) endpoints, run inside the test process.

Put it between a client and the shared test bed's S3 (``FaultProxy(s3_env.endpoint)``, hand the client
``proxy.endpoint``) and switch it to an outage instead of stopping the shared server:

- ``"refuse"``: the listening socket is closed, so new connections are refused (ECONNREFUSED), and open
  ones are reset;
- ``"reset"``: connections are accepted and reset at once (RST), open ones are reset;
- ``"hang"``: connections are accepted and nothing is ever answered (the client's read timeout decides);
- a *partial* outage (``scope=``): only requests matching a predicate fail (their connection is reset),
  everything else flows, e.g. checkpoint uploads failing while the rest of the bucket works.

``response_headers`` (not a fault): headers added to every response, e.g. the ``x-amz-bucket-region`` AWS
sends and the bed's SeaweedFS does not. A response is recognised by its status line at the start of a chunk
read from the server, which is where it starts for a client that waits for each answer (boto3, s3get).

Outages can be started by hand (``set_mode``/``outage``) or armed to start at a precise moment:
``arm(predicate, seconds)`` starts an outage when the first request whose ``(method, path)`` matches
arrives, and that request itself fails. Requests are recognised by their HTTP request line in the stream
from the client; every one is logged with the time and whether it was forwarded.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MODES = ("pass", "refuse", "reset", "hang")
REQUEST_LINE = re.compile(rb"(GET|PUT|POST|HEAD|DELETE) (/\S*) HTTP/1\.[01]\r\n")
STATUS_LINE = re.compile(rb"HTTP/1\.[01] [0-9]{3}[^\r\n]*\r\n")


@dataclass
class Request:
    at: float  # time.monotonic()
    method: str
    path: str
    forwarded: bool


@dataclass
class Outage:
    """One outage window; ``started``/``ended`` are events a test can wait on."""

    predicate: Callable[[str, str], bool] | None
    seconds: float | None  # None: until ``end_outage``
    mode: str = "refuse"
    scope: Callable[[str, str], bool] | None = None  # partial outage: only these requests fail
    started: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    start_at: float | None = None
    end_at: float | None = None
    trigger: tuple[str, str] | None = None  # the request that started it
    failed_connections: int = 0  # connections refused/reset/hung while it lasted (refused ones not counted)

    @property
    def duration(self) -> float | None:
        if self.start_at is None:
            return None
        return (self.end_at or time.monotonic()) - self.start_at


def _reset(sock: socket.socket) -> None:
    """Close with RST rather than FIN: the peer sees 'connection reset by peer'.

    A close alone is deferred while a pump thread is blocked in recv() on the socket; SHUT_RD wakes it first."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in recv() and sends FIN now
    with contextlib.suppress(OSError):
        sock.close()


class _Conn:
    def __init__(self, proxy: FaultProxy, client: socket.socket):
        self.proxy, self.client = proxy, client
        self.upstream: socket.socket | None = None
        self.closed = False
        self.lock = threading.Lock()

    def start(self) -> None:
        try:
            self.upstream = socket.create_connection(self.proxy.upstream, timeout=10)
            self.upstream.settimeout(None)
        except OSError:
            self.close(reset=True)
            return
        threading.Thread(target=self._client_to_upstream, daemon=True, name="fp-c2u").start()
        threading.Thread(target=self._upstream_to_client, daemon=True, name="fp-u2c").start()

    def close(self, reset: bool = False) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        if reset:
            _reset(self.client)
        else:
            _close(self.client)
        if self.upstream is not None:
            _close(self.upstream)
        self.proxy._forget(self)

    def _client_to_upstream(self) -> None:
        try:
            while True:
                data = self.client.recv(65536)
                if not data:
                    break
                forward = True
                for m in REQUEST_LINE.finditer(data):
                    forward = self.proxy._on_request(m.group(1).decode(), m.group(2).decode()) and forward
                if not forward or self.proxy.mode != "pass":
                    self.proxy._fail(self)
                    return
                self.upstream.sendall(data)  # type: ignore[union-attr]
        except OSError:
            pass
        self.close()

    def _upstream_to_client(self) -> None:
        try:
            while True:
                data = self.upstream.recv(65536)  # type: ignore[union-attr]
                if not data:
                    break
                if self.proxy.mode != "pass":
                    self.proxy._fail(self)
                    return
                self.client.sendall(self.proxy._with_headers(data))
        except OSError:
            pass
        self.close()


class FaultProxy:
    """``with FaultProxy("http://127.0.0.1:7333") as p: ... p.endpoint ...``"""

    def __init__(self, upstream_url: str):
        u = urlsplit(upstream_url)
        assert u.scheme == "http", "plain HTTP only: the proxy reads request lines"
        self.upstream = (u.hostname or "127.0.0.1", u.port or 80)
        self.mode = "pass"
        self.response_headers: dict[str, str] = {}
        self.requests: list[Request] = []
        self.outages: list[Outage] = []
        self._armed: list[Outage] = []
        self._partial: list[Outage] = []
        self._conns: set[_Conn] = set()
        self._hung: list[socket.socket] = []
        self._lock = threading.RLock()
        self._closing = False
        self._listener: socket.socket | None = None
        self._listen()
        self.port = self._listener.getsockname()[1]  # type: ignore[union-attr]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True, name="fp-accept")
        self._accept_thread.start()

    # --- public ------------------------------------------------------------------------------------------

    def _with_headers(self, data: bytes) -> bytes:
        m = STATUS_LINE.match(data) if self.response_headers else None
        if m is None:
            return data
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.response_headers.items()).encode()
        return data[: m.end()] + extra + data[m.end() :]

    def set_mode(self, mode: str) -> None:
        assert mode in MODES, mode
        with self._lock:
            old, self.mode = self.mode, mode
            if mode != "pass":
                for c in list(self._conns):  # an outage breaks connections already open, too
                    self._fail(c)
            if mode == "refuse" and old != "refuse":
                self._unlisten()
            elif mode != "refuse" and old == "refuse":
                self._listen(self.port)
            if mode == "pass":
                hung, self._hung = self._hung, []
                for s in hung:
                    _reset(s)

    def outage(self, seconds: float | None, mode: str = "refuse") -> Outage:
        """Starts an outage now; it ends after ``seconds`` (None: at ``end_outage``)."""
        o = Outage(None, seconds, mode)
        with self._lock:
            self._begin(o, None)
        return o

    def arm(
        self,
        predicate: Callable[[str, str], bool],
        seconds: float | None,
        mode: str = "refuse",
        scope: Callable[[str, str], bool] | None = None,
    ) -> Outage:
        """Starts an outage when the first request matching ``predicate(method, path)`` arrives; with ``scope``
        only requests matching ``scope(method, path)`` fail while it lasts (``mode`` is then ignored)."""
        o = Outage(predicate, seconds, mode, scope)
        with self._lock:
            self._armed.append(o)
        return o

    def end_outage(self, o: Outage) -> None:
        with self._lock:
            if o.started.is_set() and not o.ended.is_set():
                o.end_at = time.monotonic()
                o.ended.set()
                if o.scope is None:
                    self.set_mode("pass")
                else:
                    self._partial.remove(o)

    def forwarded(self, method: str | None = None, contains: str = "") -> list[Request]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.forwarded and (method is None or r.method == method) and contains in r.path
            ]

    def close(self) -> None:
        with self._lock:
            self._closing = True
            for o in self.outages:
                if not o.ended.is_set():
                    o.end_at = time.monotonic()
                    o.ended.set()
            self._unlisten()
            for c in list(self._conns):
                c.close(reset=True)
            for s in self._hung:
                _reset(s)
            self._hung = []

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------------------------

    def _listen(self, port: int = 0) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # re-binding the same port after a 'refuse' outage
        s.listen(128)
        s.settimeout(0.2)
        self._listener = s

    def _unlisten(self) -> None:
        if self._listener is not None:
            # shutdown first: a plain close leaves the socket listening while the accept thread still polls it
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None

    def _accept_loop(self) -> None:
        while not self._closing:
            listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            client.settimeout(None)
            with self._lock:
                mode = self.mode
                if mode == "pass":
                    conn = _Conn(self, client)
                    self._conns.add(conn)
                else:
                    self._count_failure()
                    if mode == "hang":
                        self._hung.append(client)
                    else:
                        _reset(client)
                    continue
            conn.start()

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _count_failure(self) -> None:
        for o in self.outages:
            if o.started.is_set() and not o.ended.is_set():
                o.failed_connections += 1

    def _fail(self, conn: _Conn) -> None:
        """Breaks one open connection the way the current mode says."""
        with self._lock:
            if conn.closed:
                return
            self._count_failure()
            if self.mode == "hang":
                with conn.lock:
                    conn.closed = True
                self._conns.discard(conn)
                if conn.upstream is not None:
                    _close(conn.upstream)
                self._hung.append(conn.client)
                return
        conn.close(reset=True)

    def _on_request(self, method: str, path: str) -> bool:
        """Logs a request and fires an armed outage it matches; False: do not forward it."""
        with self._lock:
            for o in list(self._armed):
                if o.predicate is not None and o.predicate(method, path):
                    self._armed.remove(o)
                    self._begin(o, (method, path))
                    break
            ok = self.mode == "pass"
            for o in self._partial:
                if o.scope(method, path):  # type: ignore[misc]
                    ok = False
            self.requests.append(Request(time.monotonic(), method, path, ok))
            return ok

    def _begin(self, o: Outage, trigger: tuple[str, str] | None) -> None:
        o.trigger = trigger
        o.start_at = time.monotonic()
        self.outages.append(o)
        if o.scope is None:
            self.set_mode(o.mode)
        else:
            self._partial.append(o)
        o.started.set()
        if o.seconds is not None:
            t = threading.Timer(o.seconds, self.end_outage, args=(o,))
            t.daemon = True
            t.start()
