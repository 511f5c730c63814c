#!/usr/bin/env bash
# Make sure a RabbitMQ with its management plugin answers on localhost:5672 and :15672.
# Reuses one that already runs; otherwise installs Debian's rabbitmq-server if needed
# (as root, or with sudo) and starts it with infra/rabbitmq/rabbitmq.conf, the settings
# the Kubernetes manifests ship. Either way it imports infra/rabbitmq/definitions.json, the
# policy that bounds the dead-letter queues, as the manifests do. Idempotent.
set -euo pipefail
infra="$(cd "$(dirname "$0")/.." && pwd)/infra/rabbitmq"
config="$infra/rabbitmq.conf"

management_up() { curl -fsS -u guest:guest http://localhost:15672/api/overview >/dev/null 2>&1; }
import_definitions() {
  curl -fsS -u guest:guest -X POST -H "content-type: application/json" \
    --data-binary "@$infra/definitions.json" http://localhost:15672/api/definitions >/dev/null
}

if management_up; then
  import_definitions
  echo "rabbitmq: already running; definitions.json imported"
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v rabbitmq-server >/dev/null; then
  echo "rabbitmq: installing Debian's rabbitmq-server"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq rabbitmq-server >/dev/null
fi
$sudo rabbitmq-plugins enable --offline rabbitmq_management >/dev/null
if ! $sudo rabbitmqctl -q status >/dev/null 2>&1; then
  echo "rabbitmq: starting"
  $sudo env RABBITMQ_CONFIG_FILE="$config" rabbitmq-server -detached
fi
for _ in $(seq 1 90); do
  if management_up; then
    import_definitions
    echo "rabbitmq: ready (AMQP localhost:5672, management http://localhost:15672, guest/guest)"
    exit 0
  fi
  sleep 1
done
echo "rabbitmq: did not become ready in 90 s; see /var/log/rabbitmq/" >&2
exit 1
