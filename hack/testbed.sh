#!/usr/bin/env bash
# The local test bed: a real Kubernetes control plane (kwokctl --runtime binary with kube-apiserver,
# kube-controller-manager, kube-scheduler and etcd built from pinned Go modules; kwok plays the kubelet
# of fake nodes, one with nvidia.com/gpu: 8), a real worker node (hack/node.sh: containerd, kubelet and
# kube-proxy running the project's images, in a network namespace of its own) and a real S3 server
# (SeaweedFS `weed mini`). The control plane binds to 127.0.0.1; S3 and the API server's forwarder listen on
# the node link's host address ($HOST_IP) so that pods reach them. State lives under .testbed/.
#
#   hack/testbed.sh up      start (or reuse a healthy running bed); writes .testbed/kubeconfig, .testbed/s3.env
#   hack/testbed.sh down    stop every process it started (by pid), undo what the node changed, remove .testbed/;
#                           exits 1 naming anything left behind (process, mount, interface, cgroup, sysctl, ...)
#   hack/testbed.sh status  exit 0 when the bed is up and healthy
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=hack/versions.env
source hack/versions.env

tb="$root/.testbed"
cluster=yolo-testbed
venv_bin="$root/.venv/bin"
export KWOK_WORKDIR="$tb/kwok"
log() { echo "[testbed] $*" >&2; }
# shellcheck source=hack/node.sh
source "$root/hack/node.sh"
PAUSE_IMAGE=$("$root/hack/images.sh" names | tail -n 1)

# Not SeaweedFS defaults (8333, 9333, ...; gRPC at +10000), so a developer's own weed can run beside it.
s3_port=${TESTBED_S3_PORT:-7333}

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
  AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret setsid "$venv_bin/weed" mini \
    -dir="$tb/s3" -ip="$HOST_IP" -ip.bind="$HOST_IP" \
    -s3.port="$s3_port" -master.port=$((s3_port + 1)) -volume.port=$((s3_port + 2)) \
    -filer.port=$((s3_port + 3)) -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.volumeSizeLimitMB=256 -volume.max=400 \
    >"$tb/logs/weed.log" 2>&1 </dev/null 9>&- &
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
  # The lock serialises concurrent `up`s (parallel pytest sessions); daemons get `9>&-` so they don't hold it.
  exec 9>"$tb.lock"
  flock 9
  if healthy; then
    log "reusing the running bed"
    import_images  # what `make images` rebuilt since (seconds when nothing changed)
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
  local port; port=$(kctl config view -o jsonpath='{.clusters[0].cluster.server}' | sed 's/.*://')
  node_up "$port"
  touch "$tb/up-complete"
  log "up: KUBECONFIG=$tb/kubeconfig; S3 settings in $tb/s3.env; real node $NODE_NAME"
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
  down) down ;;
  status) healthy ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
