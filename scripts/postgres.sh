#!/usr/bin/env bash
# Make sure a PostgreSQL answers on localhost:5432 with the role and database the services'
# default DATABASE_URL names: postgresql://kubejob:kubejob@localhost:5432/kubejob
# (the role may create databases, so tests can make a fresh one per session).
# Reuses one that already answers; otherwise installs Debian's postgresql if needed (as
# root, or with sudo) and starts its cluster on port 5432. Idempotent.
# `postgres.sh stop` stops that cluster again (what `make down` uses after `make up`).
set -euo pipefail
port=5432
url="postgresql://kubejob:kubejob@127.0.0.1:$port/kubejob"

# Over TCP with the password, as the services connect; CREATEDB too, which the tests need.
ready() { [ "$(psql "$url" -XtAc "SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user" 2>/dev/null)" = t ]; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

# The Debian cluster configured for $port, as "version name status", or nothing.
cluster_on_port() { pg_lsclusters -h 2>/dev/null | awk -v port="$port" '$3 == port { print $1, $2, $4; exit }'; }

if [ "${1:-}" = stop ]; then
  read -r version name status _ <<<"$(cluster_on_port)" || true
  [ "${status:-}" = online ] || { echo "postgres: no Debian cluster runs on port $port"; exit 0; }
  $sudo pg_ctlcluster "$version" "$name" stop
  echo "postgres: stopped cluster $version/$name"
  exit 0
fi

if command -v psql >/dev/null && ready; then
  echo "postgres: already running"
  exit 0
fi

if ! command -v pg_ctlcluster >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "postgres: installing Debian's postgresql"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi

if ! pg_isready -q -h 127.0.0.1 -p "$port"; then
  read -r version name status _ <<<"$(cluster_on_port)" || true
  if [ -z "${version:-}" ]; then
    # The package normally creates `main`; a machine configured not to gets one here.
    version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)" name=main status=down
    echo "postgres: creating cluster $version/$name on port $port"
    $sudo pg_createcluster --port "$port" "$version" "$name" >/dev/null
  fi
  if [ "$status" = down ]; then
    echo "postgres: starting cluster $version/$name"
    # Under systemd this hands over to postgresql@$version-$name; in a container it runs pg_ctl.
    $sudo pg_ctlcluster "$version" "$name" start
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 1; done
fi

echo "postgres: making sure role and database kubejob exist"
# Over the unix socket as the postgres OS user (peer authentication), the one account a
# fresh Debian cluster lets in.
if ! as_postgres psql -X -q -p "$port" -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SELECT 'CREATE ROLE kubejob' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kubejob') \gexec
ALTER ROLE kubejob LOGIN CREATEDB PASSWORD 'kubejob';
SELECT 'CREATE DATABASE kubejob OWNER kubejob'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'kubejob') \gexec
SQL
then
  echo "postgres: cannot reach the server on port $port as the postgres OS user; if it is not" \
       "this machine's Debian cluster, create role kubejob (LOGIN CREATEDB, password kubejob)" \
       "and database kubejob owned by it there" >&2
  exit 1
fi

if ! ready; then
  echo "postgres: role kubejob cannot log in over TCP on 127.0.0.1:$port; see /var/log/postgresql/ and pg_hba.conf" >&2
  exit 1
fi
echo "postgres: ready (postgresql://kubejob:kubejob@localhost:$port/kubejob)"
