#!/usr/bin/env bash
# Builds the test bed's cluster DNS: CoreDNS (github.com/coredns/coredns at $COREDNS_VERSION, hack/versions.env)
# as a minimal custom build, hack/coredns/ (coremain and only the plugins the bed's Corefile uses; upstream's
# binary bundles ~60, with every cloud SDK), into a cache keyed by that version and a hash of hack/coredns/.
# A binary already in the cache is never rebuilt. About 2-4 minutes cold on 2 cores (modules from the Go
# module proxy; much of it client-go, which the Kubernetes builds also compile), seconds warm.
#
#   hack/build-coredns.sh       prints the binary's path on stdout (everything else on stderr)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"
src=$here/coredns
# shellcheck source=hack/go-env.sh
source "$here/go-env.sh"
log() { echo "[build-coredns] $*" >&2; }

pinned=$(awk -v m=github.com/coredns/coredns '$1 == m {print $2} $1 == "require" && $2 == m {print $3}' "$src/go.mod")
if [ "$pinned" != "$COREDNS_VERSION" ]; then
  log "hack/coredns/go.mod requires github.com/coredns/coredns $pinned, hack/versions.env pins $COREDNS_VERSION"
  log "fix: (cd hack/coredns && go get github.com/coredns/coredns@$COREDNS_VERSION && go mod tidy)"
  exit 1
fi

cache=${YOLO_OPERATOR_CACHE:-$HOME/.cache/yolo-operator}
hash=$(cat "$src/main.go" "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-12)
bin="$cache/coredns-$COREDNS_VERSION-$hash"
if [ ! -x "$bin/coredns" ]; then
  mkdir -p "$bin"
  log "building CoreDNS $COREDNS_VERSION (hack/coredns)"
  start=$(date +%s)
  # coremain prints this as its version (`coredns -version`); upstream's Makefile sets it the same way.
  (cd "$src" && go build -trimpath \
    -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION-yolo-$hash" \
    -o "$bin/coredns.tmp" .)
  mv "$bin/coredns.tmp" "$bin/coredns"
  log "built in $(($(date +%s) - start))s"
fi
echo "$bin/coredns"
