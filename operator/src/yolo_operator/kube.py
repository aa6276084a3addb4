"""The operator's Kubernetes API client: the dozen REST calls its handlers make, as JSON over one urllib3 pool.

Why not the ``kubernetes`` package: the handlers only ever send and read raw JSON, and importing that package
costs ~40 MiB of resident memory (thousands of generated model classes) - a third of the operator's budget.
kopf imports it too whenever it is installed, so ``__main__`` keeps it out of the operator process.

Credentials come from kopf's own login functions, the ones its watches use without that package: the pod's
ServiceAccount in a cluster, else ``$KUBECONFIG``. On a 401 they are read again and the request repeated once:
projected ServiceAccount tokens are rotated by the kubelet while the operator runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import urllib.parse
from typing import Any

import kopf
import urllib3

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
TIMEOUT = urllib3.Timeout(connect=10, read=60)  # the handlers run in threads: none may hang for good


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
    """Thread-safe (urllib3 pools are); one per process, shared by kopf's handler threads."""

    def __init__(self, pool_size: int = 10, info: kopf.ConnectionInfo | None = None):
        self.pool_size = pool_size
        self._guard = threading.Lock()
        self._connect(info or login())

    def _connect(self, info: kopf.ConnectionInfo) -> None:
        server = info.server.rstrip("/")
        kw: dict[str, Any] = {}
        if server.startswith("https:"):
            kw["ssl_context"] = info.as_ssl_context()
            if info.insecure:
                kw["assert_hostname"] = False
        headers = {"Accept": JSON, "User-Agent": "yolo-operator", **info.as_http_headers()}
        # Refused connections are retried; a broken one only for GET (a kept-alive connection the server or a
        # load balancer closed meanwhile); a POST or PATCH that may have arrived is left to the handler's retry.
        retries = urllib3.Retry(total=None, connect=3, read=1, redirect=0, status=0, other=0, backoff_factor=0.2)
        pool = urllib3.PoolManager(num_pools=2, maxsize=self.pool_size, headers=headers, timeout=TIMEOUT,
                                   retries=retries, **kw)  # fmt: skip
        with self._guard:
            self.server, self.pool = server, pool

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = JSON,
                query: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:  # fmt: skip
        """Sends one request; returns the decoded JSON answer, raises ApiError on an error status."""
        url = path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        extra = {"Content-Type": content_type} if data is not None else {}
        limit = urllib3.Timeout(connect=TIMEOUT.connect_timeout, read=timeout) if timeout else TIMEOUT
        for attempt in (1, 2):
            server, pool = self.server, self.pool
            resp = pool.request(method, server + url, body=data, headers={**pool.headers, **extra}, timeout=limit)
            if resp.status == 401 and attempt == 1:
                self._connect(login())  # a rotated token: read the credentials again, once
                continue
            if resp.status >= 400:
                raise ApiError(resp.status, resp.reason or "", resp.data.decode(errors="replace"))
            return json.loads(resp.data) if resp.data else {}
        raise AssertionError("unreachable")

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        return self.request("GET", path, query=query or None)

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return self.get(path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, obj)

    def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, patch, content_type=MERGE_PATCH)
