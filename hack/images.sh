#!/usr/bin/env bash
# `make images`: both Dockerfile targets, built on a machine that reaches no container registry.
#
#   hack/images.sh build          base image (debootstrap), wheelhouse, operator and trainer images
#   hack/images.sh wheelhouse     only .wheelhouse/ (for a `docker build` by hand on any base)
#   hack/images.sh save IMAGE     `docker save IMAGE` to stdout (for the test bed's containerd)
#   hack/images.sh id IMAGE       the image's ID (sha256:...), empty when it was never built
#   hack/images.sh size-mb IMAGE  its unpacked size in MB
#   hack/images.sh names          the images the bed runs, one per line
#
# - dockerd (Debian's docker.io) runs only while this script does, with its data under ~/.cache (layers
#   survive between runs), no iptables rules, no bridge and no IP forwarding: builds need no network.
# - The base image is Debian bookworm made by debootstrap from the apt mirror this machine already uses, plus
#   Debian's python3 and python3-venv. With a registry, the same Dockerfile builds on any Python 3.11 image:
#   BASE_IMAGE=python:3.11-slim-bookworm, or registry.access.redhat.com/ubi9/python-311 for OpenShift.
# - Python packages come from a wheelhouse built here from requirements.lock (pip's cache makes that fast) and
#   are installed inside the build with --no-index: nothing is fetched, nothing of this machine is baked in.
# - A build whose inputs (Dockerfile, the files it copies, the wheelhouse, the base) are unchanged is skipped,
#   so a warm run costs seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=hack/versions.env
source hack/versions.env

cache=${YOLO_OPERATOR_CACHE:-$HOME/.cache/yolo-operator}
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/yolo-operator/Chart.yaml)
OPERATOR_IMAGE=${OPERATOR_IMAGE:-ghcr.io/yolo-operator/yolo-operator:$app_version}
TRAINER_IMAGE=${TRAINER_IMAGE:-ghcr.io/yolo-operator/yolo-trainer:$app_version}
PAUSE_IMAGE=${PAUSE_IMAGE:-localhost/yolo-testbed/pause:$PAUSE_VERSION}
LOCAL_BASE=localhost/yolo-operator/debian-python:bookworm
BASE_IMAGE=${BASE_IMAGE:-$LOCAL_BASE}
wheelhouse="$root/.wheelhouse"
# The docker.io CLI (20.10) has BuildKit built in; a newer CLI elsewhere on PATH may need buildx.
docker_cli=${DOCKER_CLI:-/usr/bin/docker}
sock=/run/yolo-operator-docker.sock
export DOCKER_HOST=unix://$sock DOCKER_BUILDKIT=1
log() { echo "[images] $*" >&2; }

# What the images and the bed's real node need from Debian: docker.io brings dockerd, containerd and runc.
ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null && [ -x "$docker_cli" ] || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v socat >/dev/null || missing+=(socat)
  command -v iptables-save >/dev/null || missing+=(iptables)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || { log "needs ${missing[*]} (Debian packages) and root to install them"; exit 1; }
  log "installing ${missing[*]} from Debian's packages"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

dockerd_pid=""
start_dockerd() {
  "$docker_cli" version >/dev/null 2>&1 && return 0  # one already serves this socket (a concurrent run)
  mkdir -p "$cache/docker"
  setsid dockerd --data-root "$cache/docker" --exec-root /run/yolo-operator-docker \
    --pidfile /run/yolo-operator-docker.pid -H "unix://$sock" \
    --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none \
    --storage-driver=overlay2 --log-level=warn >"$cache/dockerd.log" 2>&1 </dev/null 9>&- &
  dockerd_pid=$!
  trap stop_dockerd EXIT
  local i
  for i in $(seq 100); do
    "$docker_cli" version >/dev/null 2>&1 && return 0
    kill -0 "$dockerd_pid" 2>/dev/null || { log "dockerd exited; see $cache/dockerd.log"; tail -n 20 "$cache/dockerd.log" >&2; exit 1; }
    sleep 0.2
  done
  log "dockerd did not answer in 20 s"; exit 1
}

stop_dockerd() {
  [ -n "$dockerd_pid" ] || return 0
  kill "$dockerd_pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$dockerd_pid" 2>/dev/null || true
  dockerd_pid=""
}

image_id() { "$docker_cli" image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
image_label() { "$docker_cli" image inspect --format "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true; }

apt_mirror() {
  local m
  m=$(grep -hE '^URIs: .*/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1 | awk '{print $2}')
  [ -n "$m" ] || m=$(grep -hE '^deb .*/debian/? ' /etc/apt/sources.list 2>/dev/null | head -n 1 | awk '{print $2}')
  echo "${m:-http://deb.debian.org/debian}"
}

build_local_base() {
  [ -n "$(image_id "$LOCAL_BASE")" ] && return 0
  local dir; dir=$(mktemp -d "$cache/debootstrap.XXXXXX")
  log "debootstrap bookworm (minbase + python3, python3-venv) from $(apt_mirror); ~1 min"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$dir" "$(apt_mirror)" >&2
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/*
  tar -C "$dir" -c . | "$docker_cli" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >&2
  rm -rf "$dir"
}

# The pause image the real node's containerd runs as each pod's sandbox, built from the Kubernetes module's
# own pause.c (no registry holds it for us).
build_pause() {
  [ -n "$(image_id "$PAUSE_IMAGE")" ] && return 0
  local src; src=$(cd "$(mktemp -d)" && GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  local dir; dir=$(mktemp -d)
  gcc -Os -static -DVERSION="$PAUSE_VERSION" -o "$dir/pause" "$src/build/pause/linux/pause.c"
  tar -C "$dir" -c pause | "$docker_cli" import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >&2
  rm -rf "$dir"
}

# Wheels for every pin in requirements.lock (plus the build tools the Dockerfile installs), keyed by their hash.
wheelhouse_pins() {
  cat requirements.lock
  printf '%s\n' "pip==$PIP_VERSION" "setuptools==$SETUPTOOLS_VERSION" \
    "opencv-python-headless==$(sed -n "s/^opencv-python==//p" requirements.lock)"
}
wheelhouse_key() { wheelhouse_pins | sha256sum | cut -c1-16; }

build_wheelhouse() {
  local key; key=$(wheelhouse_key)
  [ "$(cat "$wheelhouse/.key" 2>/dev/null)" = "$key" ] && return 0
  log "wheelhouse from requirements.lock (pip's cache; a cold one downloads ~4 GB)"
  rm -rf "$wheelhouse"; mkdir -p "$wheelhouse"
  "$root/.venv/bin/pip" wheel -q --no-deps --wheel-dir "$wheelhouse" -r <(wheelhouse_pins) >&2
  echo "$key" >"$wheelhouse/.key"
}

# What a build reads: the Dockerfile, every file .dockerignore admits, the base image.
inputs_key() { # target
  {
    echo "$1 $BASE_IMAGE $(image_id "$BASE_IMAGE")"
    sha256sum Dockerfile .dockerignore pyproject.toml requirements.lock
    find contract/src operator/src trainer/src -name '*.py' -type f -print0 | sort -z | xargs -0 sha256sum
    wheelhouse_key
  } | sha256sum | cut -c1-16
}

build_target() { # target image
  local key; key=$(inputs_key "$1")
  if [ "$(image_label "$2" io.yolo-operator.build-inputs)" = "$key" ]; then
    log "$2 is up to date"
    return 0
  fi
  build_wheelhouse  # only now: a fresh clone of unchanged sources finds its images without one
  log "docker build --target $1 -t $2 (base $BASE_IMAGE)"
  "$docker_cli" build --network=none --target "$1" -t "$2" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --label io.yolo-operator.build-inputs="$key" . >&2
}

build() {
  ensure_packages
  [ -x "$root/.venv/bin/pip" ] || { log "run make venv first"; exit 1; }
  start_dockerd
  [ "$BASE_IMAGE" = "$LOCAL_BASE" ] && build_local_base
  build_pause
  build_target operator "$OPERATOR_IMAGE"
  build_target trainer "$TRAINER_IMAGE"
  "$docker_cli" image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' \
    | grep -F -e "$OPERATOR_IMAGE" -e "$TRAINER_IMAGE" -e "$PAUSE_IMAGE" >&2
  # Superseded images and build cache would otherwise grow with every source change.
  "$docker_cli" image prune -f >/dev/null
  "$docker_cli" builder prune -f --keep-storage 12GB >/dev/null 2>&1 || true
}

# Tags both images for REGISTRY (the same names and tag under it: REGISTRY/yolo-operator:0.1.0, ...) and pushes
# them with this script's dockerd; log in first: DOCKER_CONFIG=... or `docker login` against that socket.
push() { # registry
  local registry="${1%/}" img
  [ -n "$registry" ] || { echo "usage: $0 push REGISTRY (e.g. quay.io/my-team)" >&2; exit 2; }
  start_dockerd
  for img in "$OPERATOR_IMAGE" "$TRAINER_IMAGE"; do
    local target="$registry/${img#*/*/}"
    "$docker_cli" tag "$img" "$target"
    log "pushing $target"
    "$docker_cli" push "$target"
  done
}

case "${1:-}" in
  build) build ;;
  push) push "${2:-}" ;;
  wheelhouse) build_wheelhouse ;;
  save) start_dockerd; "$docker_cli" save "$2" ;;
  id) start_dockerd; image_id "$2" ;;
  size-mb) start_dockerd; "$docker_cli" image inspect -f '{{.Size}}' "$2" | awk '{print int($1 / 1048576) + 1}' ;;
  names) printf '%s\n' "$OPERATOR_IMAGE" "$TRAINER_IMAGE" "$PAUSE_IMAGE" ;;
  *) echo "usage: $0 build|push REGISTRY|wheelhouse|save IMAGE|id IMAGE|size-mb IMAGE|names" >&2; exit 2 ;;
esac
