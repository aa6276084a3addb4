#!/usr/bin/env bash
# The release the upgrade test (tests/e2e/test_upgrade.py) starts from: PREVIOUS_RELEASE in hack/versions.env,
# a commit of this repository. Built once per commit and cached under ~/.cache/yolo-operator/previous-release/.
#
#   hack/previous-release.sh build    export its chart and build its operator image (skipped when cached);
#                                     prints the exported chart's directory
#   hack/previous-release.sh import   build, then import the image into the bed's real node (hack/node.sh)
#   hack/previous-release.sh image    the image's name: ghcr.io/yolo-operator/yolo-operator:prev-<commit>
#   hack/previous-release.sh chart    the exported chart's directory (after build)
#
# - Only the operator image: old and new charts (appVersion 0.1.0 both) name the same trainer image, so the
#   jobs the old operator starts run today's trainer (docs/install.md, "Upgrading").
# - The tag prev-<commit> never overwrites today's images (tagged with the chart's appVersion), and the node
#   keeps it beside them (hack/node.sh import-image).
# - The image is built from the commit's own Dockerfile and sources (`git archive`), on this machine's base
#   image, with hack/images.sh's dockerd (~45 s cold on 2 cores, most of it pip inside the build; cached: ~2 s).
# - The commit must be in this clone's history (a shallow clone: git fetch --unshallow).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=hack/versions.env
source hack/versions.env

cache=${YOLO_OPERATOR_CACHE:-$HOME/.cache/yolo-operator}
log() { echo "[previous-release] $*" >&2; }

commit=$(git rev-parse --verify --quiet "${PREVIOUS_RELEASE:?hack/versions.env sets no PREVIOUS_RELEASE}^{commit}") || {
  log "commit $PREVIOUS_RELEASE (PREVIOUS_RELEASE in hack/versions.env) is not in this clone; a shallow clone"
  log "needs its history: git fetch --unshallow (or git fetch origin $PREVIOUS_RELEASE)"
  exit 1
}
short=${commit:0:12}
repo=$(sed -n '/^operator:/,/^[a-z]/s/^ *repository: *//p' charts/yolo-operator/values.yaml | head -n 1)
IMAGE=${repo:-ghcr.io/yolo-operator/yolo-operator}:prev-$short
dir="$cache/previous-release/$commit"

export_tree() {
  [ -f "$dir/exported" ] && return 0
  rm -rf "$dir"; mkdir -p "$dir/src"
  # What the commit's Dockerfile copies, its pins, and its chart.
  git archive "$commit" Dockerfile .dockerignore pyproject.toml requirements.lock hack/versions.env \
    contract/src operator/src trainer/src charts/yolo-operator | tar -x -C "$dir/src"
  touch "$dir/exported"
}

# The commit's wheelhouse, only what its operator target installs (its dependencies, the `operator` extra, the
# build backend): a few MB to send as build context, where the whole wheelhouse (torch, ~3.5 GB) took ~160 s.
# From today's wheelhouse when the pins are the same (no network), else from the package index (pip's cache).
wheelhouse() {
  local out="$dir/src/.wheelhouse" reqs
  rm -rf "$out"; mkdir -p "$out"
  reqs=$("$root/.venv/bin/python" -c 'import sys, tomllib; p = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["operator"]))' "$dir/src/pyproject.toml")
  local from=()
  if cmp -s requirements.lock "$dir/src/requirements.lock"; then
    hack/images.sh wheelhouse
    from=(--no-index --find-links "$root/.wheelhouse")
  else
    log "its requirements.lock differs from today's: its operator's wheels from the package index"
  fi
  # shellcheck disable=SC1091
  (source "$dir/src/hack/versions.env"
   "$root/.venv/bin/pip" wheel -q "${from[@]}" --wheel-dir "$out" --constraint "$dir/src/requirements.lock" \
     $reqs "pip==$PIP_VERSION" "setuptools==$SETUPTOOLS_VERSION" >&2)
}

build() {
  export_tree
  local id; id=$(hack/images.sh id "$IMAGE")
  if [ -n "$id" ] && [ "$(cat "$dir/image-id" 2>/dev/null)" = "$id" ]; then
    echo "$dir/src/charts/yolo-operator"
    return 0
  fi
  local start=$SECONDS
  wheelhouse
  hack/images.sh operator-from "$dir/src" "$IMAGE"
  rm -rf "$dir/src/.wheelhouse"
  hack/images.sh id "$IMAGE" >"$dir/image-id"
  log "built $IMAGE from $commit in $((SECONDS - start)) s"
  echo "$dir/src/charts/yolo-operator"
}

case "${1:-}" in
  build) build ;;
  import) build >/dev/null; hack/node.sh import-image "$IMAGE" ;;
  image) echo "$IMAGE" ;;
  chart) [ -f "$dir/exported" ] || { log "not built: $0 build"; exit 1; }; echo "$dir/src/charts/yolo-operator" ;;
  *) echo "usage: $0 build|import|image|chart" >&2; exit 2 ;;
esac
