"""The OpenShift console plugin's ConsolePlugin, kept by the operator when OLM installed it.

OLM (v0 and v1 alike) creates from a bundle only the kinds operator-registry lists as supported, and ConsolePlugin
is not among them: OLM v1.2 refuses the whole bundle ("bundle contains unsupported resource ... ConsolePlugin").
So the bundle hands the plugin's ConsolePlugin to the operator ($YOLO_OPERATOR_CONSOLE_PLUGIN: its metadata and
spec) and the leader applies it once it leads, pointing at the plugin's Service in the operator's own namespace.
Server-side apply: a new version's changes land, fields another manager set stay. The Helm chart creates its own
ConsolePlugin and never sets the variable. OLM does not remove it on uninstall (it is not the bundle's):
``oc delete consoleplugin yolo-operator-console-plugin``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import aiohttp

from yolo_operator.runtime import kube
from yolo_operator.runtime.config import console_plugin_problem

log = logging.getLogger("yolo_operator.console_plugin")

API_VERSION = "console.openshift.io/v1"
PLURAL = "consoleplugins"
FIELD_MANAGER = "yolo-operator"


def build(template: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The ConsolePlugin to apply: ``template``'s metadata (name, labels) and spec, its backend Service in
    ``namespace`` (where OLM installed the operator and the plugin's Service)."""
    if problem := console_plugin_problem(template):
        raise ValueError(problem)
    spec = copy.deepcopy(template["spec"])
    spec["backend"]["service"]["namespace"] = namespace
    meta = {k: v for k, v in template["metadata"].items() if k in ("name", "labels", "annotations")}
    return {"apiVersion": API_VERSION, "kind": "ConsolePlugin", "metadata": meta, "spec": spec}


async def apply(client: kube.Client, template: dict[str, Any], namespace: str) -> bool:
    """Applies the ConsolePlugin; never fails the operator (a cluster without the console API has no use for it,
    and a missing permission is logged for the admin). True when the API server took it."""
    body = build(template, namespace)
    name = body["metadata"]["name"]
    path = kube.path(API_VERSION, PLURAL, name=name)
    try:
        await client.request("PATCH", path, body, content_type="application/apply-patch+yaml",
                             query={"fieldManager": FIELD_MANAGER, "force": "true"})  # fmt: skip
    except kube.ApiError as e:
        if e.status == 404:
            log.info("no console API (%s): ConsolePlugin %s not created", API_VERSION, name)
        else:
            log.warning("ConsolePlugin %s not applied: %s", name, e.message)
        return False
    except (aiohttp.ClientError, TimeoutError) as e:  # unreachable: the next leader start tries again
        log.warning("ConsolePlugin %s not applied: %s", name, e)
        return False
    log.info("ConsolePlugin %s applied (backend Service %s/%s)", name, namespace,
             body["spec"]["backend"]["service"].get("name"))  # fmt: skip
    return True
