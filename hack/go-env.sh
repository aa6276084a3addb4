# shellcheck shell=bash
# The Go environment of every hack/build-*.sh (sourced): the local toolchain, static binaries, the pinned
# modules' own go.mod, and a Go build cache of the project's own. The binaries are cached by version
# (~/.cache/yolo-operator/<tool>-<version>), so once they are built the build cache only holds ~8 GB of
# intermediate objects a version bump may reuse: `make test` removes it after its builds (go-cache-trim), which
# leaves the tests that disk (the bed's images take ~25 GB of it).
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOPATH=${GOPATH:-$HOME/go}
export GOCACHE=${YOLO_OPERATOR_CACHE:-$HOME/.cache/yolo-operator}/go-build
