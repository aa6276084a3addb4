"""yolo_operator.runtime.kube: REST paths and error messages (pure)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from yolo_operator.runtime import kube


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("v1", "pods", "ns"), "/api/v1/namespaces/ns/pods"),
        (("v1", "pods"), "/api/v1/pods"),
        (("batch/v1", "jobs", "ns", "j"), "/apis/batch/v1/namespaces/ns/jobs/j"),
        (("yolo-operator.io/v1alpha1", "trainingjobs", "ns", "t", "status"),
         "/apis/yolo-operator.io/v1alpha1/namespaces/ns/trainingjobs/t/status"),
        (("rbac.authorization.k8s.io/v1", "roles", "ns"), "/apis/rbac.authorization.k8s.io/v1/namespaces/ns/roles"),
    ],
)
def test_path(args, expected):
    assert kube.path(*args) == expected


def test_api_error_message_is_the_status_message_else_the_body():
    status = {"kind": "Status", "message": 'jobs.batch "x" is forbidden: ...', "code": 403}
    assert kube.ApiError(403, "Forbidden", json.dumps(status)).message == status["message"]
    assert kube.ApiError(502, "Bad Gateway", "<html>proxy</html>").message == "<html>proxy</html>"
    assert kube.ApiError(504, "Gateway Timeout", "").message == "Gateway Timeout"
    assert "(409) Conflict" in str(kube.ApiError(409, "Conflict", "{}"))


def test_the_operator_process_never_imports_the_kubernetes_package():
    """It is installed here (the trainer and the tests use it); the operator must run without it (~40 MiB)."""
    code = (
        "import sys, yolo_operator.__main__, yolo_operator.runtime.wiring, yolo_operator.runtime.health\n"
        "assert sys.modules['kubernetes'] is None, sys.modules['kubernetes']\n"
        "assert not [m for m in sys.modules if m.startswith('kubernetes.')]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize(
    ("host", "server"),
    [("10.96.0.1", "https://10.96.0.1:6443"), ("fd00::1", "https://[fd00::1]:6443"), (None, "https://kubernetes.default.svc")],
)
def test_in_a_pod_the_service_address_comes_from_the_environment(monkeypatch, host, server):
    import kopf

    def service_account(**_):
        return kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="t")

    monkeypatch.setattr(kopf, "login_with_service_account", service_account)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    if host:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    info = kube.login()
    assert info.server == server and info.token == "t"


# --- the async client against a local HTTP server (aiohttp.web): retries, re-login, errors, one session ---


def _serve(handler, scenario):
    """Runs ``scenario(client, calls)`` against a plain-HTTP server answering with ``handler(request, calls)``."""
    import asyncio

    import kopf
    from aiohttp import web

    async def main():
        calls: list[tuple[str, str, str, bytes]] = []

        async def handle(request: web.Request) -> web.Response:
            calls.append((request.method, request.path_qs, request.headers.get("Authorization", ""),
                          await request.read()))  # fmt: skip
            answer = handler(request, calls)
            return await answer if asyncio.iscoroutine(answer) else answer

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        client = kube.Client(pool_size=2, info=kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}", token="t0"))
        try:
            return await scenario(client, calls)
        finally:
            await client.close()
            await runner.cleanup()

    return asyncio.run(main())


def test_client_sends_json_and_raises_api_errors():
    from aiohttp import web

    def handler(request, calls):
        if request.method == "POST":
            return web.json_response({"kind": "Status", "message": "already exists", "code": 409}, status=409)
        return web.json_response({"kind": "Thing", "n": len(calls)})

    async def scenario(client, calls):
        assert await client.get("/api/v1/pods", labelSelector="a=b") == {"kind": "Thing", "n": 1}
        with pytest.raises(kube.ApiError) as e:
            await client.create("/api/v1/namespaces/ns/pods", {"metadata": {"name": "p"}})
        assert e.value.status == 409 and e.value.message == "already exists"
        await client.merge_patch("/api/v1/namespaces/ns/pods/p", {"a": 1})
        session = client.session()
        await client.get("/x")
        assert client.session() is session  # one session for every request
        return calls

    calls = _serve(handler, scenario)
    assert [(m, p, a) for m, p, a, _ in calls] == [
        ("GET", "/api/v1/pods?labelSelector=a%3Db", "Bearer t0"),
        ("POST", "/api/v1/namespaces/ns/pods", "Bearer t0"),
        ("PATCH", "/api/v1/namespaces/ns/pods/p", "Bearer t0"),
        ("GET", "/x", "Bearer t0"),
    ]
    assert json.loads(calls[2][3]) == {"a": 1}


def test_client_logs_in_again_once_on_a_401(monkeypatch):
    import kopf
    from aiohttp import web

    def handler(request, calls):
        ok = request.headers.get("Authorization") == "Bearer t1"
        return web.json_response({"ok": ok}, status=200 if ok else 401)

    async def scenario(client, calls):
        monkeypatch.setattr(kube, "login", lambda: kopf.ConnectionInfo(server=client.server, token="t1"))
        return await client.get("/api/v1/pods")

    assert _serve(handler, scenario) == {"ok": True}


def test_client_retries_a_refused_connection_then_raises(monkeypatch):
    import asyncio
    import socket

    import aiohttp
    import kopf

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(d):
        sleeps.append(d)
        await real_sleep(0)

    monkeypatch.setattr(kube.asyncio, "sleep", sleep)

    async def main():
        client = kube.Client(info=kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}", token="t"))
        try:
            with pytest.raises(aiohttp.ClientConnectorError):
                await client.create("/api/v1/namespaces/ns/pods", {})
        finally:
            await client.close()

    asyncio.run(main())
    assert sleeps == list(kube.CONNECT_RETRY_DELAYS)
