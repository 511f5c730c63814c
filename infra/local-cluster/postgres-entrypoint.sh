#!/bin/sh
# The local postgres:17 image's entrypoint (images.sh), doing what the official image's does for
# the variables infra/k8s/postgres.yaml sets: on an empty PGDATA, initdb with POSTGRES_USER as the
# superuser (password POSTGRES_PASSWORD, required over TCP) and create POSTGRES_DB; then run the
# server on every address of the pod.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ "${POSTGRES_DB:-$POSTGRES_USER}" != "postgres" ]; then
    echo "CREATE DATABASE \"${POSTGRES_DB:-$POSTGRES_USER}\"" | postgres --single -D "$PGDATA" -j postgres >/dev/null
  fi
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
