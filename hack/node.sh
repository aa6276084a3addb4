#!/usr/bin/env bash
# The test bed's real worker node: containerd (Debian's package), kubelet and kube-proxy (built from the pinned
# Kubernetes module), a CNI bridge network, and the project's own images imported into containerd.
# Sourced by hack/testbed.sh (which owns the bed's lifecycle); its subcommands are also run by tests:
#
#   hack/node.sh poweroff      the node dies: kubelet and every container SIGKILLed, nothing more reported
#   hack/node.sh start         (re)start containerd, kubelet and kube-proxy, and advertise the GPUs again
#   hack/node.sh import        bring the images `make images` built onto the node, where containerd lacks that
#                              image ID: pulled from the bed's registry when it runs (only new layers move),
#                              else imported whole from docker
#   hack/node.sh import-image IMAGE   also import IMAGE (the previous release's operator, ...:prev-<commit>)
#   hack/node.sh leftovers     print what a torn-down bed left on this machine (nothing, when clean)
#
# Layout. The node lives in a network namespace of its own ($NODE_NETNS), joined to this machine by one veth pair:
# $HOST_IP on this side (the API server's forwarder, S3 and cluster DNS listen there, nothing else), $NODE_IP on the
# node's side (kubelet). Pods sit on a bridge inside the node's namespace ($POD_CIDR); their default route ends
# there, so they reach this machine's $HOST_IP and nothing beyond it. kube-proxy's iptables rules, the bridge and
# the pods' veths all live in that namespace and go with it. The processes share this machine's mount namespace
# (kubelet mounts volumes that containerd's runc must see) and cgroup v1 hierarchy (cgroupfs).
set -euo pipefail

node_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/daemon.sh
source "$node_root/hack/daemon.sh"
tb=${tb:-$(realpath -m "$node_root/.testbed")}  # symlinks resolved, as in hack/testbed.sh
cache=${YOLO_OPERATOR_CACHE:-$HOME/.cache/yolo-operator}

NODE_NAME=real-node-0
NODE_NETNS=yolo-testbed-node
HOST_IF=yolo-tb0
HOST_IP=10.213.255.1
NODE_IP=10.213.255.2
LINK_CIDR=30
POD_CIDR=10.213.0.0/24
POD_GATEWAY=10.213.0.1
POD_BRIDGE=yolo-br0
SERVICE_CIDR=10.0.0.0/24  # kube-apiserver's default --service-cluster-ip-range (kwokctl sets none)
SERVICE_API_IP=10.0.0.1
# The kubelet's clusterDNS is $HOST_IP (hack/testbed.sh runs CoreDNS there, a host process like the API server).
CLUSTER_DOMAIN=cluster.local
# Extended resource the node advertises: the scheduler places GPU pods here; the trainer trains on CPU.
NODE_GPUS=${TESTBED_NODE_GPUS:-4}
# Only pods that select and tolerate this reach the real node; kwok's nodes take everything else.
NODE_LABEL=yolo-operator.io/real-node
# The bed's container registry (hack/testbed.sh registry: Debian's docker-registry, the CNCF distribution 2.8) on
# the link's host address, over plain HTTP: `make images` pushes there and the node's containerd pulls from it.
REGISTRY_PORT=${TESTBED_REGISTRY_PORT:-7500}
REGISTRY_HOST=$HOST_IP:$REGISTRY_PORT
# The default image names' registry: the node resolves it from the bed's registry (a mirror, as in a disconnected
# cluster), so pods that name ghcr.io/yolo-operator/...:TAG get what `make images` built, never the internet.
MIRRORED_REGISTRY=ghcr.io
node_dir="$tb/node"
run_dir=/run/yolo-testbed              # short: containerd's and shims' unix sockets live here
# What this machine was like before any bed touched it: written by the first `up` since the last clean `down`
# (whichever clone ran it; `owner` names its .testbed), read by every teardown, removed once one ends clean.
# Under /run: a reboot resets both the sysctls and this record.
BEFORE_DIR=/run/yolo-testbed-before
containerd_root="$cache/containerd-root"  # imported images survive between beds
containerd_sock="$run_dir/containerd.sock"
# containerd's CRI plugin reads each registry's hosts.toml from here (config_path) anew at every pull.
registry_hosts_dir="$node_dir/registry-hosts"
# Paths the kubelet and containerd write outside their own directories whatever they are told.
SIDE_PATHS=(/var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /run/containerd /run/netns /etc/cni)
# Sysctls the kubelet (kernel tunables) and kube-proxy change; restored on teardown.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.netfilter.nf_conntrack_max net.ipv4.ip_forward net.ipv4.conf.all.route_localnet)
node_log() { echo "[node] $*" >&2; }

in_node() { nsenter --net="/run/netns/$NODE_NETNS" -- "$@"; }
kctl() { PATH="$(cat "$tb/bin"):$PATH" kubectl --kubeconfig "$tb/kubeconfig" "$@"; }

# --- what was here before (teardown restores it and checks against it) --------------------------------------
record_before() {
  if [ -f "$BEFORE_DIR/complete" ]; then echo "$tb" >"$BEFORE_DIR/owner"; return 0; fi
  mkdir -p "$BEFORE_DIR"
  local p
  for p in "${SIDE_PATHS[@]}"; do if [ -e "$p" ]; then echo "$p"; fi; done >"$BEFORE_DIR/paths"
  sysctl -e "${SYSCTLS[@]}" 2>/dev/null >"$BEFORE_DIR/sysctl" || true
  { iptables-save 2>/dev/null || true; } | { grep -vE '^#|^:' || true; } >"$BEFORE_DIR/iptables"
  { ls /run/netns 2>/dev/null || true; } >"$BEFORE_DIR/netns"
  echo "$tb" >"$BEFORE_DIR/owner"
  touch "$BEFORE_DIR/complete"
}

# --- network -------------------------------------------------------------------------------------------------
net_up() {
  ip link del "$HOST_IF" 2>/dev/null || true  # a half-deleted namespace's veth
  ip netns add "$NODE_NETNS"
  ip link add "$HOST_IF" type veth peer name eth0 netns "$NODE_NETNS"
  ip addr add "$HOST_IP/$LINK_CIDR" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  ip route add "$POD_CIDR" via "$NODE_IP" dev "$HOST_IF"  # replies to pods; goes with the veth
  in_node ip link set lo up
  in_node ip addr add "$NODE_IP/$LINK_CIDR" dev eth0
  in_node ip link set eth0 up
  in_node sysctl -qw net.ipv4.ip_forward=1  # this namespace's own: pods -> the host's side of the link
}

write_cni() {
  mkdir -p "$node_dir/cni"
  cat >"$node_dir/cni/10-yolo-testbed.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "yolo-testbed",
  "plugins": [
    {"type": "bridge", "bridge": "$POD_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$node_dir/cni-ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
}

# --- containerd ----------------------------------------------------------------------------------------------
write_containerd_config() {
  mkdir -p "$node_dir" "$containerd_root" "$run_dir"
  cat >"$node_dir/containerd.toml" <<TOML
version = 2
root = "$containerd_root"
state = "$run_dir/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$containerd_sock"
[ttrpc]
  address = "$containerd_sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Root in this VM lacks CAP_SYS_RESOURCE: without this every sandbox dies setting oom_score_adj -998.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node_dir/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    # hosts.toml per registry (write_registry_hosts); changes there need no restart.
    config_path = "$registry_hosts_dir"
[plugins."io.containerd.internal.v1.opt"]
  path = "$cache/containerd-opt"
TOML
}

# The bed's registry over plain HTTP, under its own name and as the mirror of $MIRRORED_REGISTRY.
write_registry_hosts() {
  local host
  for host in "$REGISTRY_HOST" "$MIRRORED_REGISTRY"; do
    mkdir -p "$registry_hosts_dir/$host"
    cat >"$registry_hosts_dir/$host/hosts.toml" <<TOML
server = "http://$REGISTRY_HOST"
[host."http://$REGISTRY_HOST"]
  capabilities = ["pull", "resolve"]
TOML
  done
}

registry_up() { curl -sf -o /dev/null --max-time 2 "http://$REGISTRY_HOST/v2/"; }

start_daemon() { # name command... : in the node's network namespace, logged, pid recorded
  local name=$1; shift
  mkdir -p "$tb/logs" "$tb/pids"
  detach nsenter --net="/run/netns/$NODE_NETNS" -- "$@" >>"$tb/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$tb/pids/$name.pid"
}

stop_daemon() { # name [signal]: the daemon's whole process group (it leads a session of its own)
  local f="$tb/pids/$1.pid" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  kill -"${2:-TERM}" -- "-$pid" 2>/dev/null || kill -"${2:-TERM}" "$pid" 2>/dev/null || true
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

ctr_() { ctr --address "$containerd_sock" --namespace k8s.io "$@"; }

start_containerd() {
  write_containerd_config
  write_registry_hosts
  start_daemon containerd containerd --config "$node_dir/containerd.toml"
  local i
  for i in $(seq 100); do ctr_ version >/dev/null 2>&1 && return 0; sleep 0.2; done
  node_log "containerd did not start; see $tb/logs/containerd.log"; return 1
}

# docker (hack/images.sh) -> containerd, only when containerd lacks that exact image ID. When the bed's registry
# runs and holds that build (hack/images.sh push-bed), the node pulls it from there under the same name (the
# mirror, write_registry_hosts): only layers it lacks move, and their blobs stay for the next pull to reuse.
# Otherwise the image is imported whole from docker. The node keeps one copy of each image: the unpacked
# snapshots. Superseded images (and the `sha256:ID` names the CRI plugin adds, which would keep them alive) are
# removed, and imported layer blobs are dropped once unpacked, as the CRI plugin's discard_unpacked_layers does;
# otherwise every rebuild of the 7 GB trainer stays on disk twice.
import_images() {
  mkdir -p "$containerd_root/yolo-imported"
  local image id stamp keep=() todo=() pulls=() via_registry=""
  if registry_up && [ -s "$registry_record" ]; then via_registry=1; fi
  while read -r image; do
    id=$("$node_root/hack/images.sh" id "$image")
    [ -n "$id" ] || { node_log "image $image is not built (make images)"; return 1; }
    stamp="$containerd_root/yolo-imported/$(echo "$image" | tr '/:' '__')"
    keep+=("$image" "$id")
    if [ "$(cat "$stamp" 2>/dev/null)" = "$id" ] && [ -n "$(ctr_ images ls -q "name==$image")" ]; then
      continue
    elif [ -n "$via_registry" ] && [ "$(pushed "$image" id)" = "$id" ]; then
      pulls+=("$image")
    else
      todo+=("$image")
    fi
  done < <("$node_root/hack/images.sh" names)
  # Free the old copies before writing the new ones: a full disk is what this is for. A pulled image's old copy
  # goes with its name's move to the new manifest, once the pull has reused its unchanged layers.
  local ref stale=()
  while read -r ref; do
    # The previous release's operator image (import-image, for tests/e2e/test_upgrade.py) is no one's old copy,
    # and the kubelet's pulls of today's images by digest from the bed's registry are today's.
    [[ " ${keep[*]} " == *" $ref "* || "$ref" == *:prev-* ]] && continue
    if [[ "$ref" == "$REGISTRY_HOST/"*@sha256:* ]] && grep -qF "${ref#*@}" "$registry_record" 2>/dev/null; then continue; fi
    stale+=("$ref")
  done < <(ctr_ images ls -q)
  if [ ${#stale[@]} -gt 0 ]; then
    node_log "removing superseded images: ${stale[*]}"
    ctr_ images rm --sync "${stale[@]}" >/dev/null
  fi
  for image in "${pulls[@]}"; do
    pull_one "$image" || return 1
  done
  for image in "${todo[@]}"; do
    import_one "$image" "$via_registry" || return 1
  done
}

# hack/images.sh push-bed's record of what the bed's registry holds: image -> {id, ref (by digest)}.
registry_record="$tb/registry/pushed.json"
pushed() { # image field
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], {}).get(sys.argv[3], ""))' \
    "$registry_record" "$1" "$2" 2>/dev/null || true
}

pull_one() { # image
  node_log "pulling $1 from the bed's registry ($REGISTRY_HOST; only layers the node lacks)"
  ctr_ images pull --hosts-dir "$registry_hosts_dir" "$1" >/dev/null
  "$node_root/hack/images.sh" id "$1" >"$containerd_root/yolo-imported/$(echo "$1" | tr '/:' '__')"
}

import_one() { # image [keep-blobs]
  need_disk "$1" || return 1
  node_log "importing $1 into containerd"
  "$node_root/hack/images.sh" save "$1" | ctr_ images import - >&2
  # The prune drops every image's unpacked layer blobs, the pulled ones' too, and the next pull would fetch them
  # all again (containerd 1.6 fetches a layer it has unpacked but holds no blob of): not while the node pulls.
  [ -n "${2:-}" ] || ctr_ content prune references >/dev/null
  "$node_root/hack/images.sh" id "$1" >"$containerd_root/yolo-imported/$(echo "$1" | tr '/:' '__')"
}

# One more image (hack/previous-release.sh's), where containerd lacks that image ID; import_images keeps it.
import_image() { # image
  [[ "${1:-}" == *:prev-* ]] || { node_log "import-image takes a ...:prev-<commit> image, not '${1:-}'"; return 2; }
  mkdir -p "$containerd_root/yolo-imported"
  local id stamp
  id=$("$node_root/hack/images.sh" id "$1")
  [ -n "$id" ] || { node_log "image $1 is not built (hack/previous-release.sh build)"; return 1; }
  stamp="$containerd_root/yolo-imported/$(echo "$1" | tr '/:' '__')"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$id" ] && [ -n "$(ctr_ images ls -q "name==$1")" ]; then
    return 0
  fi
  local ref older=()  # an earlier pin's
  while read -r ref; do
    if [[ "$ref" == *:prev-* && "$ref" != "$1" ]]; then older+=("$ref"); fi
  done < <(ctr_ images ls -q)
  [ ${#older[@]} -eq 0 ] || ctr_ images rm --sync "${older[@]}" >/dev/null
  import_one "$1" "$(if registry_up; then echo 1; fi)"
}

# Importing writes the image twice (layer blobs, then snapshots) before the blobs are dropped: refuse early,
# naming what to free, rather than fail half-way through with ENOSPC.
need_disk() { # image
  local size_mb free_mb
  size_mb=$("$node_root/hack/images.sh" size-mb "$1")
  mkdir -p "$containerd_root"
  free_mb=$(df -Pm "$containerd_root" | awk 'NR==2 {print $4}')
  if [ "$free_mb" -lt $((size_mb * 2 + 1024)) ]; then
    node_log "importing $1 needs $((size_mb * 2 + 1024)) MB free under $containerd_root; $free_mb MB are."
    node_log "free disk space (docker images, ~/.cache) or point YOLO_OPERATOR_CACHE at a larger disk"
    return 1
  fi
}

# --- kubelet and kube-proxy ----------------------------------------------------------------------------------
write_node_configs() {
  local server=$1
  mkdir -p "$node_dir/kubelet" "$node_dir/pod-logs" "$node_dir/volume-plugins"
  local pki="$tb/kwok/clusters/$cluster/pki"
  cat >"$node_dir/kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: bed
  cluster: {server: "$server", certificate-authority: "$pki/ca.crt"}
users:
- name: node
  user: {client-certificate: "$pki/admin.crt", client-key: "$pki/admin.key"}
contexts:
- name: node
  context: {cluster: bed, user: node}
current-context: node
YAML
  # For dnsPolicy Default (ClusterFirst pods get the cluster DNS): no resolver off the machine.
  printf 'options ndots:1\n' >"$node_dir/resolv.conf"
  cat >"$node_dir/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
# Reached only from this machine, through the node's own link; the API server's kubelet client has no cert.
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$containerd_sock
podLogsDir: $node_dir/pod-logs
volumePluginDir: $node_dir/volume-plugins
resolvConf: $node_dir/resolv.conf
clusterDNS: [$HOST_IP]
clusterDomain: $CLUSTER_DOMAIN
registerWithTaints:
- {key: $NODE_LABEL, value: "true", effect: NoSchedule}
maxPods: 30
serializeImagePulls: false
# The bed brings its images in itself (imported, or pulled by ctr from its registry), often after the kubelet
# started: it must run them under imagePullPolicy Never/IfNotPresent as present, without a pull record of its own
# (the default, NeverVerifyPreloadedImages, refuses those: ErrImageNeverPull).
imagePullCredentialsVerificationPolicy: NeverVerify
# The images were imported, not pulled: never garbage-collect them; evict only on a truly full disk. In bytes,
# not percent: the node shares this machine's disk, where 2% of 252 GB (5 GB) was crossed while a rebuilt trainer
# image was pushed and pulled, and the eviction manager's image reclaim deleted the pod sandbox image (containerd
# 1.6 does not report it pinned), so no pod could start until the next import.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 200Mi, nodefs.available: 1Gi, imagefs.available: 1Gi, nodefs.inodesFree: 1%}
evictionPressureTransitionPeriod: 10s
shutdownGracePeriod: 0s
YAML
  cat >"$node_dir/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $node_dir/kubeconfig}
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
# Leave the machine's conntrack limits and timeouts as they are; masquerade so pod -> Service -> pod works
# on the bridge without br_netfilter; no route_localnet (no NodePorts on localhost).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {masqueradeAll: true, localhostNodePorts: false}
YAML
}

start_kubelet() {
  local bin; bin=$(cat "$tb/bin")
  start_daemon kubelet "$bin/kubelet" --config "$node_dir/kubelet.yaml" --kubeconfig "$node_dir/kubeconfig" \
    --root-dir "$node_dir/kubelet" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --node-labels "$NODE_LABEL=true,nvidia.com/gpu.present=true" --v=1
}

start_kube_proxy() {
  local bin; bin=$(cat "$tb/bin")
  start_daemon kube-proxy "$bin/kube-proxy" --config "$node_dir/kube-proxy.yaml" --v=1
}

# Kubernetes' documented way to advertise an extended resource without a device plugin: patch the capacity.
advertise_gpus() {
  local i
  for i in $(seq 120); do kctl get node "$NODE_NAME" >/dev/null 2>&1 && break; sleep 0.5; done
  kctl patch node "$NODE_NAME" --subresource=status --type=merge \
    -p "{\"status\":{\"capacity\":{\"nvidia.com/gpu\":\"$NODE_GPUS\"}}}" >/dev/null
  kctl wait --for=condition=Ready "node/$NODE_NAME" --timeout=120s >/dev/null
  for i in $(seq 120); do
    [ "$(kctl get node "$NODE_NAME" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}')" = "$NODE_GPUS" ] && return 0
    sleep 0.5
  done
  node_log "the node never showed nvidia.com/gpu allocatable"; return 1
}

# The API server listens on 127.0.0.1 (kwokctl's binary runtime), which no pod can reach: a forwarder on the
# link's host side carries the port that the `kubernetes` Service's endpoint (--advertise-address) names.
start_api_forwarder() {
  local port=$1
  mkdir -p "$tb/logs" "$tb/pids"
  detach socat "TCP-LISTEN:$port,bind=$HOST_IP,reuseaddr,fork" "TCP:127.0.0.1:$port" \
    >>"$tb/logs/api-forwarder.log" 2>&1 </dev/null &
  echo $! >"$tb/pids/api-forwarder.pid"
}

# The API server's address as the node reaches it: the forwarder's, on the API server's own port.
node_server() {
  echo "https://$HOST_IP:$(kctl config view -o jsonpath='{.clusters[0].cluster.server}' | sed 's/.*://')"
}

node_start() {
  poweroff  # idempotent: whatever still runs of the node is stopped first, never started twice
  write_cni
  write_node_configs "$(node_server)"  # this checkout's settings, e.g. for a bed started before a change to them
  start_containerd
  start_kubelet
  start_kube_proxy
  advertise_gpus
}

node_up() { # API server port
  write_cni
  write_node_configs "https://$HOST_IP:$1"
  start_api_forwarder "$1"
  start_containerd
  import_images
  start_kubelet
  start_kube_proxy
  advertise_gpus
}

# --- teardown ------------------------------------------------------------------------------------------------
# Every process in the pods' cgroups (cgroupfs puts them all under kubepods).
pod_pids() { cat /sys/fs/cgroup/pids/kubepods/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/cgroup.procs \
  /sys/fs/cgroup/pids/kubepods/*/*/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/*/*/cgroup.procs 2>/dev/null || true; }
shim_pids() { pgrep -f "containerd-shim.*-address $containerd_sock" || true; }

kill_pods() {
  local p
  for p in $(pod_pids) $(shim_pids); do kill -9 "$p" 2>/dev/null || true; done
}

poweroff() {
  stop_daemon kubelet KILL
  kill_pods
  stop_daemon kube-proxy KILL
  stop_daemon containerd KILL
  kill_pods
}

our_mounts() { # deepest first; also those of the bed of another clone that died without a teardown
  local owner; owner=$(cat "$BEFORE_DIR/owner" 2>/dev/null || echo "$tb")
  awk '{print $5}' /proc/self/mountinfo | sed 's/\\040/ /g' \
    | { grep -E "^($tb|$owner|$run_dir|$containerd_root|/run/containerd|/var/lib/kubelet|/run/netns/cni-|/run/netns/$NODE_NETNS)" || true; } \
    | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-
}

rmdir_cgroups() { # the pods' cgroups, once their last process is gone (a 3 GiB trainer takes a while to die)
  local h
  for _ in $(seq 60); do
    [ -z "$(pod_pids)" ] && break
    kill_pods; sleep 0.25
  done
  for _ in $(seq 20); do
    for h in /sys/fs/cgroup/*/kubepods; do
      if [ -d "$h" ]; then find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
    done
    ls -d /sys/fs/cgroup/*/kubepods >/dev/null 2>&1 || return 0
    sleep 0.25
  done
}

node_down() {
  stop_daemon kubelet
  stop_daemon kube-proxy
  if [ -S "$containerd_sock" ]; then  # stop every container first, so no shim outlives containerd
    local t
    for t in $(ctr_ tasks ls -q 2>/dev/null || true); do ctr_ tasks kill -s SIGKILL "$t" 2>/dev/null || true; done
  fi
  kill_pods
  stop_daemon containerd
  stop_daemon api-forwarder
  local p
  for p in $(ip netns pids "$NODE_NETNS" 2>/dev/null || true); do kill -9 "$p" 2>/dev/null || true; done
  rmdir_cgroups
  local m
  while read -r m; do
    if [ -n "$m" ]; then umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; fi
  done < <(our_mounts)
  local n
  for n in $(ls /run/netns 2>/dev/null || true); do  # pods' namespaces containerd made
    case $n in cni-*) grep -qx "$n" "$BEFORE_DIR/netns" 2>/dev/null || rm -f "/run/netns/$n" ;; esac
  done
  ip link del "$HOST_IF" 2>/dev/null || true  # synchronous, and takes the node's end with it
  ip netns del "$NODE_NETNS" 2>/dev/null || true
  rm -rf "$run_dir"
  [ -f "$BEFORE_DIR/complete" ] || return 0  # nothing known about the machine before: nothing to restore
  local line
  while read -r line; do  # "key = value"
    if [ -n "$line" ]; then sysctl -qw "${line%% = *}=${line#* = }" 2>/dev/null || true; fi
  done <"$BEFORE_DIR/sysctl"
  for p in "${SIDE_PATHS[@]}"; do
    if [ -e "$p" ] && ! grep -qx "$p" "$BEFORE_DIR/paths"; then
      umount -R "$p" 2>/dev/null || true  # `ip netns add` bind-mounts /run/netns onto itself
      rm -rf "$p" 2>/dev/null || true
    fi
  done
}

# Anything a torn-down bed must not leave behind; one line each. Reads the snapshot in $node_dir/before.
leftovers() {
  local before="$BEFORE_DIR"
  { pgrep -af "$tb/|$run_dir|$containerd_sock|bind=$HOST_IP" || true; } | { grep -v -e "node.sh" || true; } \
    | sed 's/^/process: /'
  ss -ltnuH 2>/dev/null | awk '{print $5}' | { grep -F "$HOST_IP:" || true; } | sed 's/^/listener: /'
  our_mounts | sed 's/^/mount: /'
  { ip netns list 2>/dev/null || true; } | { grep -F "$NODE_NETNS" || true; } | sed 's/^/netns: /'
  { ip -o link show 2>/dev/null || true; } | { grep -E "$HOST_IF|$POD_BRIDGE" || true; } | awk '{print "interface: " $2}'
  { ip route show 2>/dev/null || true; } | { grep -F "${POD_CIDR}" || true; } | sed 's/^/route: /'
  { ls -d /sys/fs/cgroup/*/kubepods 2>/dev/null || true; } | sed 's/^/cgroup: /'
  if [ -e "$run_dir" ]; then echo "path: $run_dir"; fi
  local p
  for p in "${SIDE_PATHS[@]}"; do
    if [ -e "$p" ] && ! grep -qx "$p" "$before/paths"; then echo "path: $p"; fi
  done
  { diff <(sysctl -e "${SYSCTLS[@]}" 2>/dev/null) "$before/sysctl" || true; } | { grep '^<' || true; } \
    | sed 's/^< /sysctl: /'
  { diff <({ iptables-save 2>/dev/null || true; } | { grep -vE '^#|^:' || true; }) "$before/iptables" || true; } \
    | { grep -E '^[<>]' || true; } | sed 's/^/iptables: /'
  { ls /run/netns 2>/dev/null || true; } | { grep '^cni-' || true; } | { grep -vxF -f "$before/netns" || true; } \
    | sed 's/^/netns: /'
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  cluster=yolo-testbed
  PAUSE_IMAGE=$("$node_root/hack/images.sh" names | tail -n 1)
  case "${1:-}" in
    poweroff) poweroff ;;
    start) node_start ;;
    import) import_images ;;
    import-image) import_image "${2:-}" ;;
    leftovers) leftovers ;;
    *) echo "usage: $0 poweroff|start|import|import-image IMAGE|leftovers" >&2; exit 2 ;;
  esac
fi
