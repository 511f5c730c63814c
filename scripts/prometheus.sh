#!/usr/bin/env bash
# Make sure Debian's Prometheus server is installed, for the end-to-end test that scrapes the
# services (tests/e2e/test_prometheus.py). Installs it (as root, or with sudo) when missing; the
# test starts its own server on a free port, so the package's service is not needed. Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if command -v prometheus >/dev/null; then
  echo "prometheus: $(prometheus --version 2>&1 | head -1) already installed"
  exit 0
fi
apt_install prometheus prometheus
echo "prometheus: $(prometheus --version 2>&1 | head -1) installed"
