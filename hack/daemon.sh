# shellcheck shell=bash
# detach CMD...: becomes CMD, a daemon in a session of its own holding only stdin, stdout and stderr (run it in
# the background: `detach cmd args >>log 2>&1 </dev/null &`; $! is then the daemon's pid). Any other descriptor
# it inherited would stay open for the daemon's whole life: a containerd restarted under
# `flock /tmp/yolo-e2e.lock ...` kept that lock, and every e2e run waited on it, for an hour.
detach() {
  local fd
  for fd in /proc/"$BASHPID"/fd/*; do
    fd=${fd##*/}
    if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-"; fi
  done
  exec setsid "$@"
}
