#!/usr/bin/env bash
# The local test bed: a real Kubernetes control plane (kwokctl --runtime binary with kube-apiserver,
# kube-controller-manager, kube-scheduler and etcd built from pinned Go modules; kwok plays the kubelet
# of fake nodes, one with nvidia.com/gpu: 8), a real worker node (hack/node.sh: containerd, kubelet and
# kube-proxy running the project's images, in a network namespace of its own), a real S3 server
# (SeaweedFS `weed mini`), cluster DNS (CoreDNS, a minimal build: hack/build-coredns.sh) and a container registry
# (Debian's docker-registry) that the node pulls the project's images from. The control plane binds to 127.0.0.1;
# S3, DNS, the registry and the API server's forwarder listen on the node link's host address ($HOST_IP) so that
# pods and the node reach them. State lives under .testbed/.
#
#   hack/testbed.sh up      start (or reuse a healthy running bed); writes .testbed/kubeconfig, .testbed/s3.env
#   hack/testbed.sh dns-up  give a running bed that predates cluster DNS its DNS (what `up` does when it reuses
#                           a bed): start CoreDNS where it is not answering, and restart the real node (its pods
#                           die) only where its kubelet config lacks clusterDNS
#   hack/testbed.sh registry  give a running bed its container registry (what `up` does every time): start the
#                           registry where it is not answering, restart the node's containerd alone (its pods keep
#                           running) only where its config predates the registry, push what `make images` built
#                           (hack/images.sh push-bed) and pull it onto the node
#   hack/testbed.sh down    stop every process it started (by pid), undo what the node changed, remove .testbed/;
#                           exits 1 naming anything left behind (process, mount, interface, cgroup, sysctl, ...)
#   hack/testbed.sh status  exit 0 when the bed is up and healthy
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=hack/versions.env
source hack/versions.env

# Symlinks resolved: a worktree whose .testbed links to another checkout's bed uses that bed's own paths (in the
# daemons' command lines and config files, the kubelet's mounts) and its lock.
tb=$(realpath -m "$root/.testbed")
cluster=yolo-testbed
venv_bin="$root/.venv/bin"
export KWOK_WORKDIR="$tb/kwok"
log() { echo "[testbed] $*" >&2; }
# shellcheck source=hack/node.sh
source "$root/hack/node.sh"
PAUSE_IMAGE=$("$root/hack/images.sh" names | tail -n 1)

# Not SeaweedFS defaults (8333, 9333, ...; gRPC at +10000), so a developer's own weed can run beside it.
s3_port=${TESTBED_S3_PORT:-7333}
# CoreDNS's readiness endpoint (its `ready` plugin's default port), on $HOST_IP beside DNS on :53.
dns_ready_port=${TESTBED_DNS_READY_PORT:-8181}

healthy() {
  [ -f "$tb/up-complete" ] && [ -s "$tb/kubeconfig" ] && [ -s "$tb/s3.env" ] && [ -s "$tb/bin" ] || return 1
  PATH="$(cat "$tb/bin"):$PATH" kubectl --kubeconfig "$tb/kubeconfig" --request-timeout=5s get --raw /readyz >/dev/null 2>&1 || return 1
  curl -s -o /dev/null --max-time 5 "http://$HOST_IP:$s3_port/" || return 1
  kctl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True || return 1
  [ "$(kctl get node "$NODE_NAME" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}' 2>/dev/null)" = "$NODE_GPUS" ]
}

wait_for() { # seconds description command...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { log "timed out waiting for $what"; return 1; }
    sleep 1
  done
}

start_s3() {
  mkdir -p "$tb/s3" "$tb/logs" "$tb/pids"
  local key secret
  key=$(python3 -c 'import secrets; print("testbed" + secrets.token_hex(6))')
  secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
  # weed mini opens master, volume, filer and S3 ports; pin each (and their gRPC at +10000) on the link's
  # host address, the one address both this machine and the pods reach. Every bucket is a collection with
  # volumes of its own: left to size them from free disk (-volume.max 0), a machine low on disk runs out of
  # volumes after some dozen test buckets ("No writable volumes"); volumes are sparse, so a fixed count is safe.
  AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret detach "$venv_bin/weed" mini \
    -dir="$tb/s3" -ip="$HOST_IP" -ip.bind="$HOST_IP" \
    -s3.port="$s3_port" -master.port=$((s3_port + 1)) -volume.port=$((s3_port + 2)) \
    -filer.port=$((s3_port + 3)) -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.volumeSizeLimitMB=256 -volume.max=400 \
    >"$tb/logs/weed.log" 2>&1 </dev/null &
  echo $! >"$tb/pids/weed.pid"
  cat >"$tb/s3.env" <<ENV
S3_ENDPOINT=http://$HOST_IP:$s3_port
AWS_ENDPOINT_URL=http://$HOST_IP:$s3_port
AWS_REGION=us-east-1
AWS_ACCESS_KEY_ID=$key
AWS_SECRET_ACCESS_KEY=$secret
ENV
  wait_for 60 "S3 on $HOST_IP:$s3_port" curl -s -o /dev/null --max-time 2 "http://$HOST_IP:$s3_port/"
}

# Cluster DNS for the real node's pods (its kubelet's clusterDNS is $HOST_IP): the kubernetes plugin answers
# cluster.local (Services, and headless Services' per-pod <hostname>.<subdomain> names, not-ready pods too where
# the Service publishes them) and the reverse zones from the API server's watch, with no cache (tests delete and
# recreate Services within seconds). Every other name gets NXDOMAIN at once: pods have no resolver beyond it
# and no route off the machine, and a lookup must fail, not hang.
dns_ready() { curl -sf -o /dev/null --max-time 2 "http://$HOST_IP:$dns_ready_port/ready"; }

start_dns() {
  local coredns; coredns=$("$root/hack/build-coredns.sh")
  mkdir -p "$tb/dns" "$tb/logs" "$tb/pids"
  cat >"$tb/dns/Corefile" <<COREFILE
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $HOST_IP
    errors
    ready $HOST_IP:$dns_ready_port
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $tb/kubeconfig
        ttl 0
    }
    loadbalance
}
.:53 {
    bind $HOST_IP
    errors
    template ANY ANY {
        rcode NXDOMAIN
    }
}
COREFILE
  detach "$coredns" -conf "$tb/dns/Corefile" >>"$tb/logs/coredns.log" 2>&1 </dev/null &
  echo $! >"$tb/pids/coredns.pid"
  # /ready answers 200 once the kubernetes plugin has listed Services and EndpointSlices.
  wait_for 60 "cluster DNS on $HOST_IP:53 (see $tb/logs/coredns.log)" dns_ready
}

# Cluster DNS on a bed that is already up (one started before the bed had DNS, or whose CoreDNS died).
ensure_dns() {
  if ! dns_ready; then
    stop_daemon coredns
    log "starting cluster DNS on $HOST_IP:53"
    start_dns
  fi
  if ! grep -qx "clusterDNS: \[$HOST_IP\]" "$node_dir/kubelet.yaml"; then
    log "restarting the real node $NODE_NAME so that its kubelet gives pods the cluster DNS (its pods die)"
    node_start
  fi
}

# The bed's container registry: the CNCF distribution registry (Debian's docker-registry 2.8) on the node link's
# host address only, plain HTTP, data under .testbed/registry/. `make images` pushes there (hack/images.sh
# push-bed) and the node's containerd pulls from it (hack/node.sh write_registry_hosts), by digest or under the
# chart's default names (a mirror of ghcr.io). Its access log (logs/registry.log) names every blob served.
start_registry() {
  mkdir -p "$tb/registry/data" "$tb/logs" "$tb/pids"
  cat >"$tb/registry/config.yml" <<YAML
version: 0.1
log:
  level: info
  fields: {service: registry}
storage:
  filesystem: {rootdirectory: $tb/registry/data}
  delete: {enabled: true}
  cache: {blobdescriptor: inmemory}
http:
  addr: $REGISTRY_HOST
  headers: {X-Content-Type-Options: [nosniff]}
YAML
  detach docker-registry serve "$tb/registry/config.yml" >>"$tb/logs/registry.log" 2>&1 </dev/null &
  echo $! >"$tb/pids/registry.pid"
  wait_for 30 "the registry on $REGISTRY_HOST (see $tb/logs/registry.log)" registry_up
}

# The registry on a running bed, and the node pulling from it; idempotent.
ensure_registry() {
  command -v docker-registry >/dev/null || { log "no docker-registry (Debian's package; hack/images.sh build installs it)"; return 1; }
  if ! registry_up; then
    stop_daemon registry
    log "starting the bed's registry on $REGISTRY_HOST"
    start_registry
  fi
  write_registry_hosts
  if ! grep -qF "config_path = \"$registry_hosts_dir\"" "$node_dir/containerd.toml"; then
    # A running container outlives its containerd (each has its shim); the kubelet reconnects.
    log "restarting the real node's containerd to read registry hosts (its pods keep running)"
    stop_daemon containerd
    start_containerd
  fi
  "$root/hack/images.sh" push-bed
  import_images
}

start_cluster() {
  local bin=$1
  mkdir -p "$tb"
  cat >"$tb/kwokctl.yaml" <<CFG
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  bindAddress: 127.0.0.1
  kubeVersion: $KUBE_VERSION
  kubeApiserverBinary: $bin/kube-apiserver
  kubeControllerManagerBinary: $bin/kube-controller-manager
  kubeSchedulerBinary: $bin/kube-scheduler
  kubectlBinary: $bin/kubectl
  etcdBinary: $bin/etcd
  kwokControllerBinary: $bin/kwok
  quietPull: true
  # Pods reach the API server at the kubernetes Service's address, which the forwarder on HOST_IP serves.
  kubeApiserverCertSANs: ["$HOST_IP", "$SERVICE_API_IP"]
# kwok plays the kubelet only for nodes annotated kwok.x-k8s.io/node=fake, so the real node's kubelet
# (hack/node.sh) is the only one reporting for it. The binary runtime passes --manage-all-nodes=true
# first; these later flags win.
componentsPatches:
- name: kube-apiserver
  extraArgs:
  - key: advertise-address
    value: "$HOST_IP"
  - key: service-cluster-ip-range
    value: "$SERVICE_CIDR"
  - key: kubelet-preferred-address-types
    value: InternalIP
- name: kwok-controller
  extraArgs:
  - key: manage-all-nodes
    value: "false"
  - key: manage-nodes-with-annotation-selector
    value: kwok.x-k8s.io/node=fake
# A controller-manager or scheduler that misses a lease renewal (etcd slow under a loaded CI machine) exits,
# and the binary runtime restarts nothing: with one instance of each, leader election only adds that risk.
- name: kube-controller-manager
  extraArgs:
  - key: leader-elect
    value: "false"
- name: kube-scheduler
  extraArgs:
  - key: leader-elect
    value: "false"
CFG
  PATH="$bin:$PATH" kwokctl --name "$cluster" -c "$tb/kwokctl.yaml" create cluster \
    --kubeconfig "$tb/kubeconfig" --wait 3m >&2 9>&-
  PATH="$bin:$PATH" kubectl --kubeconfig "$tb/kubeconfig" apply -f hack/testbed/nodes.yaml >&2
  PATH="$bin:$PATH" kubectl --kubeconfig "$tb/kubeconfig" wait --for=condition=Ready node --all --timeout=120s >&2
  # Workloads need their namespace's default ServiceAccount before pods are admitted.
  wait_for 60 "the default ServiceAccount" env PATH="$bin:$PATH" kubectl --kubeconfig "$tb/kubeconfig" get sa default
}

up() {
  mkdir -p "$tb"
  # The lock serialises concurrent `up`s (parallel pytest sessions); daemons start through `detach` (hack/daemon.sh) so they don't hold it.
  exec 9>"$tb.lock"
  flock 9
  if healthy; then
    log "reusing the running bed"
    ensure_registry  # and what `make images` rebuilt since onto the node (seconds when nothing changed)
    ensure_dns
    return 0
  fi
  if [ -e "$tb/kwok" ] || [ -e "$tb/pids" ] || stale_node; then
    log "found a stale bed (or another clone's node); tearing it down first"
    down_locked || log "the stale bed left the above behind; starting anyway"
    mkdir -p "$tb"
  fi
  local bin; bin=$("$root/hack/build-binaries.sh")
  echo "$bin" >"$tb/bin"
  mkdir -p "$node_dir"
  record_before
  net_up
  start_s3
  start_cluster "$bin"
  start_dns
  start_registry
  "$root/hack/images.sh" push-bed
  local port; port=$(kctl config view -o jsonpath='{.clusters[0].cluster.server}' | sed 's/.*://')
  node_up "$port"
  touch "$tb/up-complete"
  log "up: KUBECONFIG=$tb/kubeconfig; S3 settings in $tb/s3.env; cluster DNS $HOST_IP:53; registry $REGISTRY_HOST; real node $NODE_NAME"
}

dns_up() {
  exec 9>"$tb.lock"
  flock 9
  healthy || { log "no healthy bed to add cluster DNS to (hack/testbed.sh up starts one, DNS included)"; return 1; }
  ensure_dns
  log "cluster DNS $HOST_IP:53 (zone $CLUSTER_DOMAIN); real node $NODE_NAME"
}

registry_cmd() {
  exec 9>"$tb.lock"
  flock 9
  healthy || { log "no healthy bed to add the registry to (hack/testbed.sh up starts one, the registry included)"; return 1; }
  ensure_registry
  log "registry $REGISTRY_HOST (data in $tb/registry, access log $tb/logs/registry.log)"
}

# A node that no teardown undid: this clone's, or another clone's whose session was killed.
stale_node() { ip netns list 2>/dev/null | grep -qw "$NODE_NETNS" || [ -f "$BEFORE_DIR/complete" ]; }

down_locked() {
  local bin=""; [ -s "$tb/bin" ] && bin=$(cat "$tb/bin")
  if [ -d "$tb/kwok/clusters/$cluster" ] && [ -n "$bin" ]; then
    PATH="$bin:$PATH" kwokctl --name "$cluster" delete cluster >&2 || true
  fi
  # Every process we started left a pid file: ours under pids/, kwokctl's under its cluster dir.
  node_down
  local f pid
  for f in "$tb"/pids/*.pid "$tb"/kwok/clusters/"$cluster"/pids/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  done
  # A SIGKILLed process's listening sockets close a moment after it is gone.
  for _ in $(seq 40); do ss -ltnH 2>/dev/null | grep -qF "$HOST_IP:" || break; sleep 0.25; done
  local left=""
  if [ -f "$BEFORE_DIR/complete" ]; then left=$(leftovers); fi
  rm -rf "$tb"
  if [ -n "$left" ]; then
    log "left behind:"; echo "$left" | sed 's/^/  /' >&2
    return 1
  fi
  rm -rf "$BEFORE_DIR"  # clean: the next bed records the machine afresh
}

down() {
  [ -e "$tb" ] || stale_node || { log "nothing to tear down"; return 0; }
  mkdir -p "$(dirname "$tb")"
  exec 9>"$tb.lock"  # left in place: removing it would let a waiting `up` and a new one both take the lock
  flock 9
  down_locked
  log "down"
}

case "${1:-}" in
  up) up ;;
  dns-up) dns_up ;;
  registry) registry_cmd ;;
  down) down ;;
  status) healthy && dns_ready ;;
  *) echo "usage: $0 up|dns-up|registry|down|status" >&2; exit 2 ;;
esac
