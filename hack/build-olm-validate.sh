#!/usr/bin/env bash
# Builds hack/olm-validate (OLM's bundle loader and validators from github.com/operator-framework/api at
# $OLM_API_VERSION, hack/versions.env) into a cache keyed by that version and a hash of the program's sources.
# A binary already in the cache is never rebuilt. About 3-10 minutes cold on 2 cores (modules from the Go
# module proxy), seconds warm.
#
#   hack/build-olm-validate.sh            prints the binary's path on stdout (everything else on stderr)
#   hack/build-olm-validate.sh --crds     prints the module's crds/ directory (OLM's own CRDs, e.g. the
#                                         ClusterServiceVersion CRD) instead
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"
src=$here/olm-validate
# shellcheck source=hack/go-env.sh
source "$here/go-env.sh"
log() { echo "[build-olm-validate] $*" >&2; }

pinned=$(awk '$1 == "require" && $2 == "github.com/operator-framework/api" {print $3}' "$src/go.mod")
if [ "$pinned" != "$OLM_API_VERSION" ]; then
  log "hack/olm-validate/go.mod requires operator-framework/api $pinned, hack/versions.env pins $OLM_API_VERSION"
  log "fix: (cd hack/olm-validate && go get github.com/operator-framework/api@$OLM_API_VERSION && go mod tidy)"
  exit 1
fi

if [ "${1:-}" = "--crds" ]; then
  dir=$(cd "$src" && go mod download -json "github.com/operator-framework/api@$OLM_API_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  echo "$dir/crds"
  exit 0
fi

cache=${YOLO_OPERATOR_CACHE:-$HOME/.cache/yolo-operator}
hash=$(cat "$src/main.go" "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-12)
bin="$cache/olm-validate-$OLM_API_VERSION-$hash"
if [ ! -x "$bin/olm-validate" ]; then
  mkdir -p "$bin"
  log "building olm-validate against github.com/operator-framework/api $OLM_API_VERSION"
  start=$(date +%s)
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$bin/olm-validate.tmp" .)
  mv "$bin/olm-validate.tmp" "$bin/olm-validate"
  log "built in $(($(date +%s) - start))s"
fi
echo "$bin/olm-validate"
