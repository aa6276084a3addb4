"""The bed's cluster DNS (CoreDNS on the node link, hack/testbed.sh; the kubelet's clusterDNS), asked from a pod on
the real node the way a multi-node training job asks it: a ClusterIP Service by its full and its short name, the
per-pod name (hostname.subdomain) of a pod behind a headless Service that publishes not-ready addresses (rank 0 is
not Ready when the other ranks look it up) and a TCP connection to it by that name, and a name outside the cluster,
which must fail with an answer (NXDOMAIN), not hang until the resolver times out."""

from __future__ import annotations

import json

import pytest
from yolo_dev import testbed
from yolo_dev.stack import REAL_NODE_PLACEMENT

from tests.integration.test_real_node import OPERATOR_IMAGE, run_pod

pytestmark = pytest.mark.integration

PORT = 29500  # torch.distributed's usual master port

# A TCP server (rank 0's rendezvous, in miniature): greets every connection with its pod's hostname.
SERVER = f"""
import socket
s = socket.create_server(("", {PORT}))
while True:
    c, _ = s.accept()
    c.sendall(socket.gethostname().encode() + b"\\n")
    c.close()
"""

# The client: every lookup with the pod's own resolv.conf (glibc's getaddrinfo, as Python and torch use it).
CLIENT = """
import json, socket, time

def lookup(name, tries=1):
    for i in range(tries):
        try:
            return sorted({a[4][0] for a in socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)})
        except socket.gaierror as e:
            if i == tries - 1:
                return {"errno": e.errno, "error": str(e)}
            time.sleep(0.5)

out = {"resolv": open("/etc/resolv.conf").read()}
out["service"] = lookup(f"web.{NS}.svc.cluster.local")
out["short"] = lookup("web")
out["pod"] = lookup("worker-0.workers", tries=20)
out["pod_fqdn"] = lookup(f"worker-0.workers.{NS}.svc.cluster.local")
try:
    out["ptr"] = socket.gethostbyaddr(out["service"][0])[0]
except (OSError, IndexError, KeyError) as e:
    out["ptr"] = repr(e)
with socket.create_connection(("worker-0.workers", PORT), timeout=20) as c:
    out["greeting"] = c.makefile().readline().strip()
start = time.monotonic()
out["external"] = lookup("example.com")
out["external_s"] = round(time.monotonic() - start, 3)
print(json.dumps(out))
"""


def test_pod_resolves_services_and_a_not_ready_pod_behind_a_headless_service(kubectl, namespace, real_node):
    host_ip, domain = testbed.cluster_dns()
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "nobody"}, "ports": [{"port": 80}]}}  # fmt: skip
    headless = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "workers"},
                "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": {"app": "worker"},
                         "ports": [{"port": PORT}]}}  # fmt: skip
    # hostname + subdomain: what an Indexed Job gives its pods (<job>-<index>, the Job's spec.subdomain). Never
    # Ready (its readiness probe asks a port nobody listens on): only publishNotReadyAddresses names it.
    main = {"name": "main", "image": OPERATOR_IMAGE, "imagePullPolicy": "Never", "command": ["python", "-c", SERVER],
            "readinessProbe": {"tcpSocket": {"port": PORT + 1}, "periodSeconds": 1}}  # fmt: skip
    worker = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "worker-0", "labels": {"app": "worker"}},
              "spec": {"hostname": "worker-0", "subdomain": "workers", "terminationGracePeriodSeconds": 1,
                       **REAL_NODE_PLACEMENT, "containers": [main]}}  # fmt: skip
    for obj in (service, headless, worker):
        kubectl("apply", "-f", "-", input=json.dumps(obj), namespace=namespace)
    cluster_ip = kubectl("get", "service", "web", "-o", "jsonpath={.spec.clusterIP}", namespace=namespace).stdout
    worker_ip = testbed.wait_until(
        lambda: kubectl("get", "pod", "worker-0", "-o", "jsonpath={.status.podIP}", namespace=namespace).stdout,
        120, interval=1, what="worker-0's pod IP",
    )  # fmt: skip

    script = f"NS, PORT = {namespace!r}, {PORT}\n" + CLIENT
    out = json.loads(run_pod(kubectl, namespace, "client", OPERATOR_IMAGE, script).splitlines()[-1])
    print(json.dumps(out, indent=1))

    assert f"nameserver {host_ip}" in out["resolv"].splitlines(), out["resolv"]
    assert f"search {namespace}.svc.{domain}" in out["resolv"], out["resolv"]
    assert out["service"] == [cluster_ip]
    assert out["short"] == [cluster_ip]
    assert out["ptr"] == f"web.{namespace}.svc.{domain}"
    assert out["pod"] == [worker_ip]
    assert out["pod_fqdn"] == [worker_ip]
    assert out["greeting"] == "worker-0", "connected to worker-0 by its per-pod name"
    ready = kubectl("get", "pod", "worker-0", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                    namespace=namespace).stdout  # fmt: skip
    assert ready == "False", "the name resolved while the pod was not Ready"
    # EAI_NONAME is an answer (NXDOMAIN); a resolver that got none (timeout, REFUSED) gives EAI_AGAIN.
    assert out["external"]["errno"] == -2, out["external"]  # socket.EAI_NONAME on Linux


def test_a_deleted_service_stops_resolving(kubectl, namespace, real_node):
    """Nothing caches a name: a Service resolves while it exists and is NXDOMAIN as soon as it is deleted (tests
    make and remove Services within seconds)."""
    script = (
        "import socket, sys\n"
        "try:\n"
        "    print(socket.getaddrinfo(sys.argv[1], None, socket.AF_INET)[0][4][0])\n"
        "except socket.gaierror as e:\n"
        "    print('errno', e.errno)\n"
    )  # fmt: skip
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "once"},
               "spec": {"selector": {"app": "nobody"}, "ports": [{"port": 80}]}}  # fmt: skip
    kubectl("apply", "-f", "-", input=json.dumps(service), namespace=namespace)
    first_ip = kubectl("get", "service", "once", "-o", "jsonpath={.spec.clusterIP}", namespace=namespace).stdout
    first = run_pod(kubectl, namespace, "ask-1", OPERATOR_IMAGE, script, container={"args": ["once"]})
    kubectl("delete", "service", "once", namespace=namespace)
    gone = run_pod(kubectl, namespace, "ask-2", OPERATOR_IMAGE, script, container={"args": ["once"]})
    assert first.split() == [first_ip]
    assert gone.split() == ["errno", "-2"], "NXDOMAIN for the deleted Service"
