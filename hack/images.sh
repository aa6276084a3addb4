#!/usr/bin/env bash
# `make images`: both Dockerfile targets, built on a machine that reaches no container registry.
#
#   hack/images.sh build          base image (debootstrap), wheelhouse, operator and trainer images
#   hack/images.sh wheelhouse     only .wheelhouse/ (for a `docker build` by hand on any base)
#   hack/images.sh save IMAGE     `docker save IMAGE` to stdout (for the test bed's containerd)
#   hack/images.sh id IMAGE       the image's ID (sha256:...), empty when it was never built
#   hack/images.sh size-mb IMAGE  its unpacked size in MB
#   hack/images.sh names          the images the bed runs, one per line
#   hack/images.sh operator       only the operator image (on the default base)
#   hack/images.sh console-plugin the console plugin image (builds console-plugin/dist first, hack/console-plugin.sh)
#   hack/images.sh second-base    the operator image on a second base shaped like UBI (build_ubi_shaped_base)
#   hack/images.sh smoke IMAGE    hack/image-smoke.py inside an operator image (the same test on every base)
#   hack/images.sh docker ARGS... the docker CLI against this script's dockerd (tests/integration/test_images.py)
#   hack/images.sh operator-from DIR IMAGE   the operator target of another tree (an older commit's export,
#                                 hack/previous-release.sh) with this script's base, tagged IMAGE
#
# - dockerd (Debian's docker.io) runs only while this script does, with its data under ~/.cache (layers
#   survive between runs), no iptables rules, no bridge and no IP forwarding: builds need no network.
# - The base image is Debian bookworm made by debootstrap from the apt mirror this machine already uses, plus
#   Debian's python3 and python3-venv. With a registry, the same Dockerfile builds on any base with a Python 3.11
#   named by PYTHON (default python3.11): BASE_IMAGE=python:3.11-slim-bookworm, or
#   registry.access.redhat.com/ubi9/python-311 for OpenShift (its python3 is 3.9). `second-base` builds the
#   operator on a base made here in that shape, so a Dockerfile that ran `python3` would fail there.
# - Python packages come from a wheelhouse built here from requirements.lock (pip's cache makes that fast) and
#   are installed inside the build with --no-index: nothing is fetched, nothing of this machine is baked in.
# - A build whose inputs (Dockerfile, the files it copies, the wheelhouse, the base) are unchanged is skipped,
#   so a warm run costs seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=hack/versions.env
source hack/versions.env
# shellcheck source=hack/daemon.sh
source hack/daemon.sh

cache=${YOLO_OPERATOR_CACHE:-$HOME/.cache/yolo-operator}
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/yolo-operator/Chart.yaml)
OPERATOR_IMAGE=${OPERATOR_IMAGE:-ghcr.io/yolo-operator/yolo-operator:$app_version}
TRAINER_IMAGE=${TRAINER_IMAGE:-ghcr.io/yolo-operator/yolo-trainer:$app_version}
CONSOLE_PLUGIN_IMAGE=${CONSOLE_PLUGIN_IMAGE:-ghcr.io/yolo-operator/yolo-console-plugin:$app_version}
PAUSE_IMAGE=${PAUSE_IMAGE:-localhost/yolo-testbed/pause:$PAUSE_VERSION}
LOCAL_BASE=localhost/yolo-operator/debian-python:bookworm
BASE_IMAGE=${BASE_IMAGE:-$LOCAL_BASE}
PYTHON=${PYTHON:-python3.11}
# The second base, shaped like UBI 9's python-311 (build_ubi_shaped_base), and the operator image built on it.
UBI_SHAPED_BASE=localhost/yolo-operator/ubi-shaped:bookworm
UBI_SHAPED_OPERATOR_IMAGE=localhost/yolo-operator/yolo-operator:$app_version-ubi-shaped
wheelhouse="$root/.wheelhouse"
# The test bed's registry (hack/testbed.sh registry; address from hack/node.sh) and push-bed's record of it.
tb=$(realpath -m "$root/.testbed")
bed_registry="$(sed -n 's/^HOST_IP=//p' hack/node.sh):${TESTBED_REGISTRY_PORT:-$(sed -n 's/^REGISTRY_PORT=${TESTBED_REGISTRY_PORT:-\([0-9]*\)}$/\1/p' hack/node.sh)}"
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
  # The Prometheus that tests/integration/test_trainingjob_metrics.py starts (on 127.0.0.1, in a temp dir).
  command -v prometheus >/dev/null || missing+=(prometheus)
  # The bed's registry (hack/testbed.sh registry) and the tool that reads digests from it (make bundle too).
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v skopeo >/dev/null || missing+=(skopeo)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || { log "needs ${missing[*]} (Debian packages) and root to install them"; exit 1; }
  log "installing ${missing[*]} from Debian's packages"
  apt-get update -qq >&2
  # No service may start from a package (prometheus and docker-registry would listen on every address): policy-rc.d
  # 101 tells invoke-rc.d not to, where the machine has none of its own.
  local policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  [ -z "$policy" ] || rm -f "$policy"
}

# One dockerd serves every concurrent run of this script (the bed's node imports images while a test builds):
# each run holds a shared lock on dockerd.users while it may use it, and the last one to leave stops it. Starting
# and stopping take dockerd.lock, so a run never talks to a daemon that another is taking down.
dockerd_pid=""
dockerd_user=""
start_dockerd() {
  [ -z "$dockerd_user" ] || return 0
  mkdir -p "$cache/docker"
  exec 7>>"$cache/dockerd.lock" 8>>"$cache/dockerd.users"
  flock -x 7
  flock -s 8
  dockerd_user=1
  trap stop_dockerd EXIT
  # One already serves this socket (a concurrent run), or one is still starting or stopping (pidfile, live pid).
  local i pid
  for i in $(seq 100); do
    "$docker_cli" version >/dev/null 2>&1 && { flock -u 7; return 0; }
    pid=$(cat /run/yolo-operator-docker.pid 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  detach dockerd --data-root "$cache/docker" --exec-root /run/yolo-operator-docker \
    --pidfile /run/yolo-operator-docker.pid -H "unix://$sock" \
    --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none \
    --insecure-registry "$bed_registry" \
    --storage-driver=overlay2 --log-level=warn >"$cache/dockerd.log" 2>&1 </dev/null &
  dockerd_pid=$!
  for i in $(seq 100); do
    "$docker_cli" version >/dev/null 2>&1 && { flock -u 7; return 0; }
    kill -0 "$dockerd_pid" 2>/dev/null || { log "dockerd exited; see $cache/dockerd.log"; tail -n 20 "$cache/dockerd.log" >&2; exit 1; }
    sleep 0.2
  done
  log "dockerd did not answer in 20 s"; exit 1
}

stop_dockerd() {
  [ -n "$dockerd_user" ] || return 0
  dockerd_user=""
  flock -x 7
  # Another run still holding its shared lock keeps the daemon; the last one stops it.
  flock -x -n 8 || return 0
  [ -n "$dockerd_pid" ] || dockerd_pid=$(cat /run/yolo-operator-docker.pid 2>/dev/null || true)
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

# A base shaped like Red Hat's ubi9/python-311, made from Debian packages (no registry here): `python3` is NOT
# 3.11 but PyPy 3.9 (as UBI 9's python3 is its system CPython 3.9), CPython 3.11 is `python3.11` with
# venv/ensurepip, there is no `python`, and the default user is 1001 as UBI's. One layer on the default base
# (which already has Debian's python3.11 and python3.11-venv): Debian's pypy3 installed from .debs this machine's
# apt fetches, and Debian's /usr/bin/python3 -> python3.11 link diverted away and replaced by pypy3. Rebuilt
# when the default base is; the versions it got are in its labels.
UBI_SHAPED_DEBS=(pypy3 pypy3-lib libgdbm6)  # and pypy3's dependencies the default base lacks (pre-depends first)
build_ubi_shaped_base() {
  local base_id; base_id=$(image_id "$LOCAL_BASE")
  [ "$(image_label "$UBI_SHAPED_BASE" io.yolo-operator.from)" = "$base_id" ] && return 0
  local dir; dir=$(mktemp -d "$cache/ubi-shaped.XXXXXX")
  log "UBI-shaped base: $LOCAL_BASE + Debian's ${UBI_SHAPED_DEBS[*]} as python3"
  (cd "$dir" && { apt-get download "${UBI_SHAPED_DEBS[@]}" || { apt-get update -qq && apt-get download "${UBI_SHAPED_DEBS[@]}"; }; }) >&2
  # The check fails the build if python3 came out as 3.11 after all.
  cat >"$dir/Dockerfile" <<DOCKERFILE
FROM $LOCAL_BASE
RUN --mount=type=bind,target=/debs dpkg -i /debs/libgdbm6_*.deb /debs/pypy3-lib_*.deb \\
 && dpkg -i /debs/pypy3_*.deb \\
 && dpkg-divert --quiet --local --rename --divert /usr/bin/python3.debian --add /usr/bin/python3 \\
 && ln -s pypy3 /usr/bin/python3 \\
 && python3 -c 'import sys; sys.exit("python3 is 3.11" if sys.version_info[:2] == (3, 11) else 0)' \\
 && mkdir -p /opt/app-root/src
WORKDIR /opt/app-root/src
USER 1001
DOCKERFILE
  "$docker_cli" build --network=none -t "$UBI_SHAPED_BASE" --label io.yolo-operator.from="$base_id" \
    --label io.yolo-operator.debs="$(cd "$dir" && echo ./*.deb)" "$dir" >&2
  rm -rf "$dir"
}

# The pause image the real node's containerd runs as each pod's sandbox, built from the Kubernetes module's
# own pause.c (no registry holds it for us).
build_pause() {
  [ -n "$(image_id "$PAUSE_IMAGE")" ] && return 0
  # shellcheck source=hack/go-env.sh
  local src; src=$(cd "$(mktemp -d)" && source "$root/hack/go-env.sh" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
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
  exec 6>>"$cache/wheelhouse.lock"
  flock -x 6  # `make test` builds the second base beside `make images`: one of them fills it
  [ "$(cat "$wheelhouse/.key" 2>/dev/null)" = "$key" ] && { flock -u 6; return 0; }
  log "wheelhouse from requirements.lock (pip's cache; a cold one downloads ~4 GB)"
  rm -rf "$wheelhouse"; mkdir -p "$wheelhouse"
  "$root/.venv/bin/pip" wheel -q --no-deps --wheel-dir "$wheelhouse" -r <(wheelhouse_pins) >&2
  echo "$key" >"$wheelhouse/.key"
  flock -u 6
}

# What a build reads: the Dockerfile, every file .dockerignore admits, the base image.
inputs_key() { # target
  {
    echo "$1 $BASE_IMAGE $(image_id "$BASE_IMAGE") $PYTHON"
    sha256sum Dockerfile .dockerignore pyproject.toml requirements.lock
    find contract/src operator/src trainer/src -name '*.py' -type f -print0 | sort -z | xargs -0 sha256sum
    wheelhouse_key
    if [ "$1" = console-plugin ]; then
      find console-plugin/serve.py console-plugin/dist -type f -print0 | sort -z | xargs -0 sha256sum
    fi
  } | sha256sum | cut -c1-16
}

build_target() { # target image
  local key; key=$(inputs_key "$1")
  if [ "$(image_label "$2" io.yolo-operator.build-inputs)" = "$key" ]; then
    log "$2 is up to date"
    return 0
  fi
  # only now: a fresh clone of unchanged sources finds its images without one (the console plugin mounts none)
  [ "$1" = console-plugin ] || build_wheelhouse
  log "docker build --target $1 -t $2 (base $BASE_IMAGE)"
  "$docker_cli" build --network=none --target "$1" -t "$2" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg PYTHON="$PYTHON" --label io.yolo-operator.build-inputs="$key" . >&2
  drop_build_context
}

# The context BuildKit keeps after a build is mostly the wheelhouse (3.5 GB, a second copy of .wheelhouse/): the
# next build that runs sends it again in ~25 s and still finds its layers cached (checksums, not snapshots, key them).
drop_build_context() { "$docker_cli" builder prune -f --filter type=source.local >/dev/null 2>&1 || true; }

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

# The console plugin image: its dist/ first (skipped when up to date), then the Dockerfile's third target.
build_console_plugin() {
  "$root/hack/console-plugin.sh" build >/dev/null
  ensure_packages
  [ -x "$root/.venv/bin/pip" ] || { log "run make venv first"; exit 1; }
  start_dockerd
  [ "$BASE_IMAGE" = "$LOCAL_BASE" ] && build_local_base
  build_target console-plugin "$CONSOLE_PLUGIN_IMAGE"
  echo "$CONSOLE_PLUGIN_IMAGE"
}

# The operator target alone: on the default base, or on the UBI-shaped one (interpreter chosen by PYTHON, as on
# UBI). Each is skipped when its inputs are unchanged; prints the image's name.
build_operator() { # base
  ensure_packages
  [ -x "$root/.venv/bin/pip" ] || { log "run make venv first"; exit 1; }
  start_dockerd
  if [ "$1" = ubi-shaped ]; then
    build_local_base
    build_ubi_shaped_base
    BASE_IMAGE=$UBI_SHAPED_BASE build_target operator "$UBI_SHAPED_OPERATOR_IMAGE"
    echo "$UBI_SHAPED_OPERATOR_IMAGE"
  else
    [ "$BASE_IMAGE" = "$LOCAL_BASE" ] && build_local_base
    build_target operator "$OPERATOR_IMAGE"
    echo "$OPERATOR_IMAGE"
  fi
}

smoke() { # image
  "$docker_cli" run --rm -i --network=none --entrypoint python "$1" - <hack/image-smoke.py
}

# Only the operator target, of another tree (its own Dockerfile and sources, a .wheelhouse beside them): on the
# same base, so BuildKit reuses this tree's dependency layer when the tree's pins and Dockerfile are the same.
build_operator_from() { # dir image
  [ -d "$1" ] && [ -n "${2:-}" ] || { echo "usage: $0 operator-from DIR IMAGE" >&2; exit 2; }
  ensure_packages
  start_dockerd
  [ "$BASE_IMAGE" = "$LOCAL_BASE" ] && build_local_base
  log "docker build --target operator -t $2 (context $1, base $BASE_IMAGE)"
  # YOLO_BUILD_NO_CACHE=1: a cold build's cost, measured on a warm machine
  "$docker_cli" build --network=none --target operator -t "$2" --build-arg BASE_IMAGE="$BASE_IMAGE" \
    ${YOLO_BUILD_NO_CACHE:+--no-cache} "$1" >&2
  drop_build_context
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

# What push-bed recorded: image -> {id, ref}.
record_get() { # image field
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], {}).get(sys.argv[3], ""))' \
    "$tb/registry/pushed.json" "$1" "$2" 2>/dev/null || true
}
record_set() { # image id ref
  python3 - "$tb/registry/pushed.json" "$@" <<'PY'
import json, os, sys
path, image, id_, ref = sys.argv[1:]
try:
    data = json.load(open(path))
except (OSError, ValueError):
    data = {}
data[image] = {"id": id_, "ref": ref}
with open(path + ".tmp", "w") as f:
    json.dump(data, f, indent=1, sort_keys=True)
os.replace(path + ".tmp", path)
PY
}

# The bed's registry, when it runs: pushes both images there under their names without the registry host
# (ghcr.io/yolo-operator/yolo-trainer:0.1.0 -> REGISTRY/yolo-operator/yolo-trainer:0.1.0) and records each one's
# digest in .testbed/registry/pushed.json, which hack/node.sh pulls from and dev/src/yolo_dev/stack.py installs
# the chart with. An image pushed since its last build is skipped, and a push sends only the layers the registry
# lacks. docker pushes over plain HTTP to the one address its dockerd was started to trust (--insecure-registry);
# a dockerd another run started without it gets skopeo's copy instead.
push_image() { # image target: to the bed's registry (plain HTTP)
  start_dockerd
  log "pushing $1 to $2"
  if "$docker_cli" info --format '{{json .RegistryConfig.IndexConfigs}}' | grep -qF "\"${2%%/*}\""; then
    "$docker_cli" tag "$1" "$2"
    "$docker_cli" push "$2" >/dev/null
    "$docker_cli" rmi "$2" >/dev/null  # the tag only; docker remembers which layers the registry has
  else
    skopeo copy --quiet --src-daemon-host "unix://$sock" --dest-tls-verify=false "docker-daemon:$1" "docker://$2" >&2
  fi
}

push_bed() {
  if ! curl -sf -o /dev/null --max-time 2 "http://$bed_registry/v2/"; then
    log "no registry on $bed_registry (hack/testbed.sh registry starts it): nothing pushed"
    return 0
  fi
  mkdir -p "$tb/registry"
  exec 5>>"$tb/registry/push.lock"
  flock -x 5
  start_dockerd
  local img id target digest
  for img in "$OPERATOR_IMAGE" "$TRAINER_IMAGE"; do
    id=$(image_id "$img")
    [ -n "$id" ] || { log "$img is not built (make images)"; return 1; }
    if [ "$(record_get "$img" id)" = "$id" ]; then
      log "$img: already in the bed's registry"
      continue
    fi
    target="$bed_registry/${img#*/}"
    push_image "$img" "$target"
    digest=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$target")
    record_set "$img" "$id" "${target%:*}@$digest"
    log "$img -> ${target%:*}@$digest"
  done
  flock -u 5
}

case "${1:-}" in
  build) build ;;
  push-bed) push_bed ;;
  push-image) push_image "${2:?usage: $0 push-image IMAGE TARGET}" "${3:?usage: $0 push-image IMAGE TARGET}" ;;
  push) push "${2:-}" ;;
  wheelhouse) build_wheelhouse ;;
  operator-from) build_operator_from "${2:-}" "${3:-}" ;;
  save) start_dockerd; "$docker_cli" save "$2" ;;
  id) start_dockerd; image_id "$2" ;;
  size-mb) start_dockerd; "$docker_cli" image inspect -f '{{.Size}}' "$2" | awk '{print int($1 / 1048576) + 1}' ;;
  names) printf '%s\n' "$OPERATOR_IMAGE" "$TRAINER_IMAGE" "$PAUSE_IMAGE" ;;
  operator) build_operator default ;;
  console-plugin) build_console_plugin ;;
  second-base) build_operator ubi-shaped ;;
  smoke) start_dockerd; smoke "$2" ;;
  docker) shift; start_dockerd; "$docker_cli" "$@" ;;
  *) echo "usage: $0 build|push REGISTRY|push-bed|push-image IMAGE TARGET|wheelhouse|operator-from DIR IMAGE|save IMAGE|id IMAGE|size-mb IMAGE|names|operator|console-plugin|second-base|smoke IMAGE|docker ARGS..." >&2; exit 2 ;;
esac
