#!/usr/bin/env bash
# Make sure Debian's Prometheus server is installed, for the end-to-end test that scrapes the
# services (tests/e2e/test_prometheus.py). Installs it (as root, or with sudo) when missing; the
# test starts its own server on a free port, so the package's service is not needed. Idempotent.
set -euo pipefail

if command -v prometheus >/dev/null; then
  echo "prometheus: $(prometheus --version 2>&1 | head -1) already installed"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "prometheus: installing Debian's prometheus"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
echo "prometheus: $(prometheus --version 2>&1 | head -1) installed"
