#!/usr/bin/env bash
# Make sure Debian's headless-capable chromium and its matching chromedriver are installed, for the
# browser test of the producer's page (tests/e2e/test_page.py). Installs them (as root, or with sudo)
# when either is missing. Idempotent.
set -euo pipefail

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  echo "browser: $(chromium --version 2>/dev/null) and its chromedriver already installed"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "browser: installing Debian's chromium and chromium-driver"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "browser: $(chromium --version 2>/dev/null) installed"
