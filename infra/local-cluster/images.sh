#!/usr/bin/env bash
# kube-job's images, built by this machine's Docker engine, which cannot pull from a registry:
# the base images are made with debootstrap from Debian's archive instead.
#
#   images.sh services      producer, worker, scaler (`make images`), from the repo's Dockerfile
#   images.sh cluster       also the images infra/k8s and the node need: rabbitmq, postgres, pause
#   images.sh rabbitmq      only the rabbitmq image, and print its tag (the tests run a RabbitMQ 4.0 from it)
#   images.sh load SOCKET   copy every image above into the containerd at SOCKET (namespace k8s.io)
#
# A base image is tagged with the hash of the functions that make it, so it is built once and
# rebuilt only when they change. With DOCKER_HOST set (e.g. `eval $(minikube docker-env)`), the daemon can
# pull, so `services` builds on the Dockerfile's default base and nothing else is made here.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${KUBE_JOB_CACHE:-$HOME/.cache/kube-job}/bin"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
services=(producer worker scaler)
# The tags the manifests name, so that infra/k8s is applied unchanged.
rabbitmq_image="rabbitmq:4.0-management"
postgres_image="postgres:17"
pause_image="registry.k8s.io/pause:3.10.1"

# dockerd without its bridge, NAT and iptables rules: it changes nothing in the host's network.
# Builds use the host's network (only pip reaches out, to the package index).
ensure_daemon() {
  docker info >/dev/null 2>&1 && return
  [[ -z "${DOCKER_HOST:-}" ]] || { echo "no Docker daemon answers at $DOCKER_HOST" >&2; exit 1; }
  echo "starting dockerd (log: /var/log/kube-job-dockerd.log)" >&2
  setsid dockerd --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
    >>/var/log/kube-job-dockerd.log 2>&1 </dev/null &
  local i
  for i in $(seq 60); do docker info >/dev/null 2>&1 && return; sleep 0.5; done
  echo "dockerd did not start; see /var/log/kube-job-dockerd.log" >&2
  exit 1
}

have() { docker image inspect "$1" >/dev/null 2>&1; }

# debootstrap SUITE PACKAGES ROOT: a minimal Debian in ROOT, without apt's caches and the docs.
bootstrap() {
  local started=$SECONDS
  debootstrap --variant=minbase --include="$2" "$1" "$3" "$mirror" >"$3.log" 2>&1 \
    || { tail -20 "$3.log" >&2; return 1; }
  rm -rf "$3"/var/cache/apt/archives/*.deb "$3"/var/lib/apt/lists/* "$3"/usr/share/{doc,man,info}/*
  echo "debootstrap $1 ($2): $((SECONDS - started))s" >&2
}

# Debian 12 (the release of python:3.11-slim) with a virtualenv on PATH, so pip installs
# into it as it would into the official image's Python. It trusts the CAs this host trusts
# (a TLS-inspecting proxy's, say), and its pip uses that store instead of its own bundle.
python_base() {
  have "$python_base" && return
  local root; root="$(mktemp -d /var/tmp/kube-job-rootfs.XXXXXX)"
  bootstrap bookworm python3,python3-venv,ca-certificates "$root"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  chroot "$root" python3 -m venv /usr/local/py
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$root/usr/local/py/pip.conf"
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/py/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$python_base" >/dev/null
  rm -rf "$root" "$root.log"
}

# Debian 13's rabbitmq-server (4.0.x) laid out like the official image: uid 999, the
# management plugin on, logs to stdout, data and cookie in /var/lib/rabbitmq (the volume).
rabbitmq() {
  have "$rabbitmq_base" && return
  local root; root="$(mktemp -d /var/tmp/kube-job-rootfs.XXXXXX)"
  bootstrap trixie rabbitmq-server "$root"
  chroot "$root" sh -ec 'groupmod -g 999 rabbitmq && usermod -u 999 -g 999 rabbitmq
    chown -R 999:999 /var/lib/rabbitmq /var/log/rabbitmq /etc/rabbitmq
    mkdir -p /etc/rabbitmq/conf.d
    echo "[rabbitmq_management,rabbitmq_prometheus]." > /etc/rabbitmq/enabled_plugins'
  tar -C "$root" -c . | docker import \
    --change 'ENV HOME=/var/lib/rabbitmq' --change 'ENV RABBITMQ_LOGS=-' \
    --change 'ENV PATH=/usr/lib/rabbitmq/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'USER 999' \
    --change 'EXPOSE 5672 15672' --change 'CMD ["rabbitmq-server"]' - "$rabbitmq_base" >/dev/null
  rm -rf "$root" "$root.log"
  docker tag "$rabbitmq_base" "$rabbitmq_image"
}

# Debian 13's PostgreSQL 17 laid out like the official image: uid 999, the server's programs on
# PATH, and an entrypoint that initialises PGDATA from POSTGRES_USER, _PASSWORD and _DB.
postgres() {
  have "$postgres_base" && return
  local root; root="$(mktemp -d /var/tmp/kube-job-rootfs.XXXXXX)"
  bootstrap trixie postgresql-17 "$root"
  chroot "$root" sh -ec 'groupmod -g 999 postgres && usermod -u 999 -g 999 postgres
    chown -R 999:999 /var/lib/postgresql /var/run/postgresql /etc/postgresql'
  install -m 0755 "$here/postgres-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/lib/postgresql/17/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PGDATA=/var/lib/postgresql/data' --change 'ENV LANG=C.UTF-8' --change 'USER 999' \
    --change 'EXPOSE 5432' --change 'ENTRYPOINT ["docker-entrypoint.sh"]' - "$postgres_base" >/dev/null
  rm -rf "$root" "$root.log"
  docker tag "$postgres_base" "$postgres_image"
}

# The sandbox image holding only build.sh's static pause.
pause() {
  have "$pause_image" && return
  local root; root="$(mktemp -d /var/tmp/kube-job-rootfs.XXXXXX)"
  cp "$bin/pause" "$root/pause"
  tar -C "$root" -c pause | docker import --change 'ENTRYPOINT ["/pause"]' --change 'USER 65535:65535' \
    - "$pause_image" >/dev/null
  rm -rf "$root"
}

build_services() {
  local base=() service started
  if [[ -z "${DOCKER_HOST:-}" ]]; then python_base; base=(--build-arg "BASE=$python_base"); fi
  for service in "${services[@]}"; do
    started=$SECONDS
    docker build -q --network=host "${base[@]}" --build-arg "SERVICE=$service" -t "$service:latest" "$repo" >/dev/null
    echo "image $service:latest: $((SECONDS - started))s" >&2
  done
}

# The tag of an image made by the functions named.
hashed() { declare -f "$@" | sha256sum | cut -c1-12; }
python_base="kube-job-base/python:$(hashed bootstrap python_base)"
rabbitmq_base="kube-job-base/rabbitmq:$(hashed bootstrap rabbitmq)"
postgres_base="kube-job-base/postgres:$({ declare -f bootstrap postgres; cat "$here/postgres-entrypoint.sh"; } \
  | sha256sum | cut -c1-12)"

case "${1:-}" in
  services) ensure_daemon; build_services ;;
  cluster) ensure_daemon; build_services; rabbitmq; postgres; pause ;;
  rabbitmq) ensure_daemon; rabbitmq; echo "$rabbitmq_image" ;;
  load)
    [[ -n "${2:-}" ]] || { echo "usage: $0 load CONTAINERD_SOCKET" >&2; exit 2; }
    images=("${services[@]/%/:latest}" "$rabbitmq_image" "$postgres_image" "$pause_image")
    docker save "${images[@]}" | "$bin/ctr" --address "$2" -n k8s.io images import - >/dev/null ;;
  *) sed -n '2,12p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
