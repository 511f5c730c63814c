#!/usr/bin/env bash
# Build the local cluster's binaries into $KUBE_JOB_CACHE/bin (outside the repo): etcd and the
# Kubernetes release pinned in go.mod (control plane, kubelet, kube-proxy, kubectl), containerd
# (containerd/go.mod), CoreDNS (coredns/go.mod), and the pause program of the release's
# build/pause, which is every pod's sandbox.
# Idempotent: a stamp holds the hash of what the build depends on, so a second
# run with unchanged inputs returns at once. Prints the bin directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${KUBE_JOB_CACHE:-$HOME/.cache/kube-job}"
bin="$cache/bin"
stamp="$bin/.stamp"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy
          containerd containerd-shim-runc-v2 ctr coredns pause)

# The go.mod and go.sum files pin everything; build.sh and the entry points are in the hash
# too, so a change of ldflags or of a main.go also rebuilds.
inputs_hash="$(cd "$here" && cat go.mod go.sum containerd/go.mod containerd/go.sum coredns/go.mod \
  coredns/go.sum coredns/main.go build.sh cmd/etcd/main.go | sha256sum | cut -d' ' -f1)"

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
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy
echo "kubernetes: $((SECONDS - start))s" >&2

# containerd's own build (its Makefile) leaves out the snapshotters that need cgo, as here.
containerd_version="$(cd containerd && go list -m -f '{{.Version}}' github.com/containerd/containerd/v2)"
(cd containerd && go build -tags "no_btrfs no_devmapper no_zfs" -ldflags "-s -w \
  -X github.com/containerd/containerd/v2/version.Version=$containerd_version" -o "$bin/" \
  github.com/containerd/containerd/v2/cmd/containerd \
  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
  github.com/containerd/containerd/v2/cmd/ctr)
(cd coredns && go build -ldflags "-s -w" -o "$bin/coredns" .)
echo "containerd, coredns: $((SECONDS - start))s" >&2

# The sandbox every pod starts from; no registry is reachable, so it is compiled here with the
# flags of the release's build/pause/Makefile (static, so it needs no libc in its image).
pause_src="$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
gcc -Os -Wall -Werror -static -DVERSION="$version" -o "$bin/pause" "$pause_src"
echo "$inputs_hash" > "$stamp"
echo "built in $((SECONDS - start))s" >&2
echo "$bin"
