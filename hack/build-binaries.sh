#!/usr/bin/env bash
# Builds the local test bed's binaries from pinned Go modules into a versioned cache.
# A binary already in the cache is never rebuilt, so a second run takes seconds.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
#   kubelet, kube-proxy (the real node)                              <- k8s.io/kubernetes
#   etcd                                                              <- go.etcd.io/etcd/server/v3
#   kwok, kwokctl                                                     <- sigs.k8s.io/kwok
#   helm                                                              <- helm.sh/helm/v3
#
# Prints the bin directory on stdout (everything else goes to stderr).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"

cache=${YOLO_OPERATOR_CACHE:-$HOME/.cache/yolo-operator}
bin="$cache/bin-k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION"
mkdir -p "$bin"
# shellcheck source=hack/go-env.sh
source "$here/go-env.sh"
log() { echo "[build-binaries] $*" >&2; }

need() { for b in "$@"; do [ -x "$bin/$b" ] || return 0; done; return 1; }

# Throwaway module that requires k8s.io/kubernetes and replaces each k8s.io/X v0.0.0 staging
# requirement with its published v0.<minor>.<patch>; the list is read from the release's own go.mod.
kube_cmds="kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy"
build_kubernetes() {
  need $kube_cmds || return 0
  local work; work=$(mktemp -d)
  local staging="v0.${KUBE_VERSION#v1.}"
  log "building Kubernetes $KUBE_VERSION (staging modules $staging); 10-20 minutes cold on 2 cores"
  local gomod
  gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module yolo-operator.io/testbed-kubernetes"
    grep -E '^go ' "$gomod"
    grep -E '^godebug ' "$gomod" || true
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    grep -E '^\s+k8s\.io/[^ ]+ v0\.0\.0$' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } >"$work/go.mod"
  cat >"$work/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
  local minor; minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  (cd "$work" && go mod tidy -e >/dev/null 2>&1 || true
   cd "$work" && go get "k8s.io/kubernetes@$KUBE_VERSION" >&2
   for c in $kube_cmds; do
     [ -x "$bin/$c" ] && continue
     log "  go build $c"
     go build -trimpath -ldflags "$ld" -o "$bin/$c.tmp" "k8s.io/kubernetes/cmd/$c" && mv "$bin/$c.tmp" "$bin/$c"
   done)
  rm -rf "$work"
}

build_etcd() {
  need etcd || return 0
  local work; work=$(mktemp -d)
  log "building etcd $ETCD_VERSION"
  (cd "$work"
   printf 'module yolo-operator.io/testbed-etcd\n\ngo 1.24\n' >go.mod
   go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
   go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3 && mv "$bin/etcd.tmp" "$bin/etcd")
  rm -rf "$work"
}

go_install() { # name module@version
  need "$1" || return 0
  log "building $1 from $2"
  GOBIN="$bin/.gobin-$1" go install -trimpath -ldflags "${3:--s -w}" "$2" >&2
  mv "$bin/.gobin-$1/$1" "$bin/$1"; rmdir "$bin/.gobin-$1"
}

build_kubernetes
build_etcd
go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
go_install kwokctl "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
helm_minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
  "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$helm_minor -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$helm_minor"
echo "$bin"
