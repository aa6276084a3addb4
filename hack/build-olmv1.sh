#!/usr/bin/env bash
# Builds OLM v1's operator-controller and catalogd (github.com/operator-framework/operator-controller at
# $OLMV1_VERSION, hack/versions.env) into a cache keyed by that version; a binary already there is never rebuilt.
# The Go module proxy serves that version but refuses the module's version list, which `go install pkg@version`
# reads (for deprecations): so a throwaway go.mod that requires it, with upstream's own requirements copied in
# (the versions upstream tested), and `go build` with upstream's build tag (containers/image without gpgme, no cgo).
# Cold: 268 s wall alone on 2 cores, modules downloaded (2026-12-07); ~21 min when it shares the cores with the
# other cold builds of `make test` under `nice -n 19`.
#
#   hack/build-olmv1.sh       prints the directory holding operator-controller and catalogd on stdout
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"
# shellcheck source=hack/go-env.sh
source "$here/go-env.sh"
log() { echo "[build-olmv1] $*" >&2; }

module=github.com/operator-framework/operator-controller
cache=${YOLO_OPERATOR_CACHE:-$HOME/.cache/yolo-operator}
bin="$cache/olmv1-$OLMV1_VERSION"
if [ ! -x "$bin/operator-controller" ] || [ ! -x "$bin/catalogd" ]; then
  mkdir -p "$bin"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  log "building operator-controller and catalogd $OLMV1_VERSION"
  start=$(date +%s)
  upstream=$(cd "$work" && go mod download -json "$module@$OLMV1_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  { printf 'module yolo-operator.io/olmv1-build\n\ngo 1.23.4\n\nrequire %s %s\n\n' "$module" "$OLMV1_VERSION"
    sed -n '/^require (/,/^)/p' "$upstream"; } >"$work/go.mod"
  (cd "$work" && go get "$module@$OLMV1_VERSION" >&2 \
    && nice -n 19 go build -tags containers_image_openpgp -trimpath -o "$work/out/" \
      "$module/cmd/operator-controller" "$module/cmd/catalogd")
  mv "$work/out/operator-controller" "$work/out/catalogd" "$bin/"
  log "built in $(($(date +%s) - start))s"
fi
echo "$bin"
