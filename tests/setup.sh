#!/usr/bin/env bash
# Installs what the tests need and nothing else; safe to run again.
#   - the third-party test peers pinned in tests/peers (npm)
#   - the official MCP conformance suite, two versions, and the Node.js 22
#     it needs, pinned in tests/conformance (npm)
#   - Debian's Chromium and chromedriver, for the real-browser tests
set -euo pipefail
cd "$(dirname "$0")/.."

npm ci --prefix tests/peers --no-audit --no-fund
npm ci --prefix tests/conformance --no-audit --no-fund

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null
fi
