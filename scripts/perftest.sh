#!/usr/bin/env bash
# Make sure Debian's Maven and a Java runtime are installed, for RabbitMQ PerfTest (bench/perftest.py
# fetches it with Maven and runs it with Java). Installs them (as root, or with sudo) when either is
# missing. Idempotent.
set -euo pipefail

if command -v mvn >/dev/null && command -v java >/dev/null; then
  echo "perftest: $(mvn -B -v 2>/dev/null | head -1) and java already installed"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "perftest: installing Debian's maven and default-jre-headless"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends maven default-jre-headless >/dev/null
echo "perftest: $(mvn -B -v 2>/dev/null | head -1) installed"
