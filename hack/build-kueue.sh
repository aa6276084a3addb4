#!/usr/bin/env bash
# Builds Kueue's manager (sigs.k8s.io/kueue/cmd/kueue at $KUEUE_VERSION, hack/versions.env) from the Go module
# proxy into a cache keyed by that version. A binary already in the cache is never rebuilt. Several minutes
# cold on 2 cores, 0 s warm. Kueue runs as a local process against a test cluster (dev/src/yolo_dev/kueue.py).
#
#   hack/build-kueue.sh            prints the binary's path on stdout (everything else on stderr)
#   hack/build-kueue.sh --crds     prints the directory of Kueue's CRDs (config/components/crd/bases in the
#                                  same module version, from the module cache) instead
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"
# shellcheck source=hack/go-env.sh
source "$here/go-env.sh"
log() { echo "[build-kueue] $*" >&2; }

module_dir() { # the module's source in the module cache (downloaded when missing)
  local work; work=$(mktemp -d)
  (cd "$work" && go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$work"
}

if [ "${1:-}" = "--crds" ]; then
  echo "$(module_dir)/config/components/crd/bases"
  exit 0
fi

cache=${YOLO_OPERATOR_CACHE:-$HOME/.cache/yolo-operator}
bin="$cache/kueue-$KUEUE_VERSION"
if [ ! -x "$bin/kueue" ]; then
  mkdir -p "$bin"
  log "building sigs.k8s.io/kueue/cmd/kueue $KUEUE_VERSION"
  start=$(date +%s)
  # Kueue's go.mod has no replace directives, so `go install module@version` builds exactly the release.
  GOBIN="$bin/.gobin" go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
    "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION" >&2
  mv "$bin/.gobin/kueue" "$bin/kueue.tmp"; rmdir "$bin/.gobin"
  mv "$bin/kueue.tmp" "$bin/kueue"
  log "built in $(($(date +%s) - start))s"
fi
echo "$bin/kueue"
