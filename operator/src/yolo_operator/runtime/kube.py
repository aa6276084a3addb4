"""The operator's Kubernetes API client: the dozen REST calls its controller makes, as JSON over one aiohttp session.

Why not the ``kubernetes`` package: the operator only ever sends and reads raw JSON, and importing that package
costs ~40 MiB of resident memory (thousands of generated model classes) - a third of the operator's budget.
kopf imports it too whenever it is installed, so ``__main__`` keeps it out of the operator process.

Asynchronous, on kopf's own event loop and its HTTP library: the reconciles are coroutines, so there are no
handler threads. One ``aiohttp.ClientSession`` per process (``Client``), opened on first use, closed by
``Client.close`` (the controller's stop, from the operator's cleanup handler).

Credentials come from kopf's own login functions, the ones its watches use without that package: the pod's
ServiceAccount in a cluster, else ``$KUBECONFIG``. On a 401 they are read again and the request repeated once:
projected ServiceAccount tokens are rotated by the kubelet while the operator runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import ssl
import urllib.parse
from typing import Any

import aiohttp
import kopf

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 60.0  # no request may hang for good
# A refused connection (nothing sent) is retried for every method, with these pauses; a broken kept-alive
# connection only for GET, once (aiohttp's own retry of idempotent requests); a POST or PATCH that may have
# arrived is left to the reconcile's retry (the work queue's backoff).
CONNECT_RETRY_DELAYS = (0.0, 0.0, 0.4, 0.8)  # urllib3's Retry(connect=3, backoff_factor=0.2), as before


class ApiError(Exception):
    """A request the API server answered with an error status (``status``: 404, 409, 422, ...)."""

    def __init__(self, status: int, reason: str, body: str):
        super().__init__(f"({status}) {reason}: {body[:500]}")
        self.status = status
        self.reason = reason
        self.body = body

    @property
    def message(self) -> str:
        """The API server's message (its Status body), else the body as received."""
        try:
            return str(json.loads(self.body)["message"])
        except (TypeError, ValueError, KeyError):
            return self.body or self.reason


def path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None,
         subresource: str | None = None) -> str:  # fmt: skip
    """The REST path of a resource: ``path("batch/v1", "jobs", "ns", "j")`` = /apis/batch/v1/namespaces/ns/jobs/j."""
    parts = ["/api/v1" if api_version == "v1" else f"/apis/{api_version}"]
    if namespace is not None:
        parts += ["namespaces", namespace]
    parts.append(plural)
    if name is not None:
        parts.append(name)
    if subresource is not None:
        parts.append(subresource)
    return "/".join(p.strip("/") if i else p for i, p in enumerate(parts))


def login() -> kopf.ConnectionInfo:
    """In a pod its ServiceAccount, else $KUBECONFIG (or ~/.kube/config): the order client-go uses. Also
    kopf's login handler (handlers.py), so that its watches and these requests use the same credentials."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings)
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if info is not None and host:
        # the Service's address from the environment, as client-go does: no cluster DNS needed
        info = dataclasses.replace(info, server=f"https://{f'[{host}]' if ':' in host else host}:{port}")
    info = info or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no credentials: neither a ServiceAccount token nor a kubeconfig was found")
    return info


class Client:
    """One per process, shared by all reconciles: one HTTP session (a keep-alive connection pool) on the event loop."""

    def __init__(self, pool_size: int = 32, info: kopf.ConnectionInfo | None = None):
        self.pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._connect(info or login())

    def _connect(self, info: kopf.ConnectionInfo) -> None:
        self.server = info.server.rstrip("/")
        self._ssl: ssl.SSLContext | bool = info.as_ssl_context() if self.server.startswith("https:") else False
        self._headers = {"Accept": JSON, "User-Agent": "yolo-operator", **info.as_http_headers()}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:  # created in the running loop, as aiohttp wants
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool_size),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, body: Any = None, *, content_type: str = JSON,
                      query: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:  # fmt: skip
        """Sends one request; returns the decoded JSON answer, raises ApiError on an error status."""
        url = path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        extra = {"Content-Type": content_type} if data is not None else {}
        limit = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=timeout) if timeout else None
        for attempt in (1, 2):
            status, reason, raw = await self._send(method, self.server + url, data, {**self._headers, **extra}, limit)
            if status == 401 and attempt == 1:
                self._connect(login())  # a rotated token: read the credentials again, once
                continue
            if status >= 400:
                raise ApiError(status, reason, raw.decode(errors="replace"))
            return json.loads(raw) if raw else {}
        raise AssertionError("unreachable")

    async def _send(self, method: str, url: str, data: bytes | None, headers: dict[str, str],
                    timeout: aiohttp.ClientTimeout | None) -> tuple[int, str, bytes]:  # fmt: skip
        kw: dict[str, Any] = {"timeout": timeout} if timeout else {}
        for i, delay in enumerate(CONNECT_RETRY_DELAYS):
            await asyncio.sleep(delay)
            try:
                async with self.session().request(method, url, data=data, headers=headers, ssl=self._ssl, **kw) as r:
                    return r.status, r.reason or "", await r.read()
            except aiohttp.ClientConnectorError:
                if i == len(CONNECT_RETRY_DELAYS) - 1:
                    raise
        raise AssertionError("unreachable")

    async def get(self, path: str, **query: Any) -> dict[str, Any]:
        return await self.request("GET", path, query=query or None)

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.get(path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, obj)

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, patch, content_type=MERGE_PATCH)
