#!/usr/bin/env bash
# Build etcd, kube-apiserver, kube-controller-manager and kubectl from the
# release pinned in go.mod into $KUBE_JOB_CACHE/bin (outside the repo).
# Idempotent: a stamp holds the hash of what the build depends on, so a second
# run with unchanged inputs returns at once. Prints the bin directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${KUBE_JOB_CACHE:-$HOME/.cache/kube-job}"
bin="$cache/bin"
stamp="$bin/.stamp"
binaries=(etcd kube-apiserver kube-controller-manager kubectl)

# go.mod and go.sum pin everything; build.sh and the etcd entry point are in
# the hash too, so a change of ldflags or of main.go also rebuilds.
inputs_hash="$(cd "$here" && cat go.mod go.sum build.sh cmd/etcd/main.go | sha256sum | cut -d' ' -f1)"

have_all() {
  local b
  for b in "${binaries[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

if have_all && [[ -f "$stamp" && "$(cat "$stamp")" == "$inputs_hash" ]]; then
  echo "$bin"
  exit 0
fi

# Never let the go command fetch a newer toolchain: the machine's Go is the one we test.
export GOTOOLCHAIN=local CGO_ENABLED=0
cd "$here"
version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
# The module's publish time stands in for the build date, so rebuilds are reproducible.
build_date="$(go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
major="${version#v}"; major="${major%%.*}"
minor="${version#v*.}"; minor="${minor%%.*}"

# The same variables that kubernetes' hack/lib/version.sh sets, so that
# `kubectl version` and the apiserver's /version report the release.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=archive -X $pkg.buildDate=$build_date"
done

mkdir -p "$bin"
start=$SECONDS
echo "building ${binaries[*]} from k8s.io/kubernetes $version into $bin" >&2
go build -ldflags "$ldflags" -o "$bin/" \
  ./cmd/etcd \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl
echo "$inputs_hash" > "$stamp"
echo "built in $((SECONDS - start))s" >&2
echo "$bin"
