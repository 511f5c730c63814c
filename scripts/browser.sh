#!/usr/bin/env bash
# Make sure Debian's headless-capable chromium and its matching chromedriver are installed, for the
# browser test of the producer's page (tests/e2e/test_page.py). Installs them (as root, or with sudo)
# when either is missing. Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  echo "browser: $(chromium --version 2>/dev/null) and its chromedriver already installed"
  exit 0
fi
apt_install browser chromium chromium-driver
echo "browser: $(chromium --version 2>/dev/null) installed"
