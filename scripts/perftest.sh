#!/usr/bin/env bash
# Make sure Debian's Maven and a Java runtime are installed, for RabbitMQ PerfTest (bench/perftest.py
# fetches it with Maven and runs it with Java). Installs them (as root, or with sudo) when either is
# missing. Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if command -v mvn >/dev/null && command -v java >/dev/null; then
  echo "perftest: $(mvn -B -v 2>/dev/null | head -1) and java already installed"
  exit 0
fi
apt_install perftest maven default-jre-headless
echo "perftest: $(mvn -B -v 2>/dev/null | head -1) installed"
