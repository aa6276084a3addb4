"""Shared helpers for the benchmarks: the bed's settings, statistics, result rows, a counting API proxy.

Benchmarks here are measurements, not tests: they never assert on timings. Each one runs its candidate and a
baseline side by side in the same run (interleaved where repeated) and reports the ratio, because the
machine they run on is shared and absolute numbers drift with whatever else runs there.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/x.py` from the repository root
    sys.path.insert(0, str(ROOT))

from yolo_dev import testbed  # noqa: E402

VENV_BIN = Path(sys.executable).parent


@dataclass
class Row:
    """One line of bench/results.md."""

    figure: str
    ours: str
    baseline: str
    ratio: str
    goal: str
    met: str  # "yes" / "no" / "n/a" / "skipped"
    note: str = ""

    def line(self, note: bool = True) -> str:
        """The row as the benchmarks print it."""
        text = f"{self.figure}: ours {self.ours} | baseline {self.baseline} | {self.ratio}"
        text += f" | goal {self.goal}: {self.met}"
        return f"{text}  {self.note}" if note else text


def fmt_ratio(ours: float, base: float) -> str:
    return f"{ours / base:.2f}x" if base else "n/a"


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def percentile(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bed_up() -> None:
    """hack/testbed.sh up is idempotent (reuses a healthy bed in a fraction of a second)."""
    testbed.bring_up()


def tool_env() -> dict[str, str]:
    return {**os.environ, "PATH": testbed.tool_path(), "KUBECONFIG": str(testbed.KUBECONFIG)}


# --- counting reverse proxy ----------------------------------------------------------------------------------


@dataclass
class Request:
    t: float
    method: str
    path: str


@dataclass
class CountingProxy:
    """Plain-HTTP listener on 127.0.0.1 that forwards every connection to the kube-apiserver over TLS with the
    admin client certificate, and records each HTTP request line it forwards (method, path, time).

    It parses only the client -> server direction (request head + Content-Length or chunked body), so
    keep-alive connections are counted request by request; responses, including watch streams, are piped
    through unparsed. A client pointed at it needs no credentials.
    """

    upstream: str  # https://host:port
    ca: Path
    cert: Path
    key: Path
    port: int = 0
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        hostport = self.upstream.split("://", 1)[1].rstrip("/")
        self._host, port = hostport.rsplit(":", 1)
        self._port = int(port)
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        ctx.set_alpn_protocols(["http/1.1"])
        self._ctx = ctx
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()

    @classmethod
    def for_bed(cls) -> CountingProxy:
        import yaml

        kc = yaml.safe_load(testbed.KUBECONFIG.read_text())
        cluster, user = kc["clusters"][0]["cluster"], kc["users"][0]["user"]
        base = testbed.KUBECONFIG.parent

        def p(v: str) -> Path:
            return Path(v) if Path(v).is_absolute() else base / v

        return cls(
            cluster["server"],
            p(cluster["certificate-authority"]),
            p(user["client-certificate"]),
            p(user["client-key"]),
        )

    # -- public ------------------------------------------------------------------------------------------
    def start(self) -> CountingProxy:
        self.port = self.port or free_port()
        threading.Thread(target=self._run, daemon=True, name="counting-proxy").start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path) -> Path:
        import yaml

        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "proxy",
            "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "proxy", "user": {"username": "proxy"}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
        }))  # fmt: skip
        return path

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def count(self, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(1 for r in self.snapshot() if since <= r.t < until)

    def breakdown(self, since: float = 0.0, until: float = float("inf")) -> Counter:
        """Requests by (verb, resource): watch/list/get/create/patch/... of jobs, pods, trainingjobs..."""
        c: Counter = Counter()
        for r in self.snapshot():
            if since <= r.t < until:
                c[classify(r.method, r.path)] += 1
        return c

    # -- the loop ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            ureader, uwriter = await asyncio.open_connection(
                self._host, self._port, ssl=self._ctx, server_hostname=self._host
            )
        except OSError:
            cwriter.close()
            return
        down = asyncio.ensure_future(self._pipe(ureader, cwriter))
        try:
            await self._requests(creader, uwriter)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            uwriter.close()  # the client is gone: so is its upstream connection (ends the pipe too)
            down.cancel()
            cwriter.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")  # IncompleteReadError at EOF ends the loop
            line, _, rest = head.partition(b"\r\n")
            method, path, _ = line.decode("latin-1").split(" ", 2)
            with self._lock:
                self.requests.append(Request(time.monotonic(), method, path))
            headers = {}
            for h in rest.split(b"\r\n"):
                if b":" in h:
                    k, v = h.split(b":", 1)
                    headers[k.strip().lower()] = v.strip()
            writer.write(head)
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    writer.write(size_line)
                    size = int(size_line.split(b";")[0].strip(), 16)
                    writer.write(await reader.readexactly(size + 2))
                    if size == 0:
                        break
            else:
                n = int(headers.get(b"content-length", b"0") or 0)
                if n:
                    writer.write(await reader.readexactly(n))
            await writer.drain()


def classify(method: str, path: str) -> str:
    """'watch trainingjobs', 'patch trainingjobs/status', 'create jobs', 'get pods', ..."""
    p, _, query = path.partition("?")
    parts = [x for x in p.split("/") if x]
    if parts[:1] == ["api"]:
        parts = parts[2:]
    elif parts[:1] == ["apis"]:
        parts = parts[3:]
    if parts[:1] == ["namespaces"] and len(parts) > 2:
        parts = parts[2:]
    resource = parts[0] if parts else p
    sub = f"/{parts[2]}" if len(parts) > 2 else ""
    named = len(parts) > 1
    verb = {
        "GET": "get" if named else ("watch" if "watch=" in query else "list"),
        "POST": "create",
        "PATCH": "patch",
        "PUT": "update",
        "DELETE": "delete",
    }.get(method, method.lower())
    return f"{verb} {resource}{sub}"


def training_bench_main(doc: str, run, argv: list[str] | None, images: int, epochs: int, repeats: int) -> list[Row]:
    """The command line of a training benchmark (``run(images, epochs, imgsz, batch, repeats)``): runs it and
    prints its rows."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--images", type=int, default=images)
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--imgsz", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=repeats)
    a = ap.parse_args(argv)
    rows = run(a.images, a.epochs, a.imgsz, a.batch, a.repeats)
    for r in rows:
        print(r.line())
    return rows
