#!/usr/bin/env bash
# Installs what the tests need and nothing else; safe to run again.
#   - the third-party test peers pinned in tests/peers (npm)
#   - the official MCP conformance suite, two versions, and the Node.js 22
#     it needs, pinned in tests/conformance (npm)
#   - Debian's Chromium and chromedriver, for the real-browser tests
#   - Debian's PostgreSQL server, for the shared store's tests (they start
#     a throwaway cluster of their own; the package's own cluster is not
#     needed, nor started by the tests)
set -euo pipefail
cd "$(dirname "$0")/.."

npm ci --prefix tests/peers --no-audit --no-fund
npm ci --prefix tests/conformance --no-audit --no-fund

packages=()
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    packages+=(chromium chromium-driver)
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    packages+=(postgresql)
fi
# prlimit runs a bot with a low open-files limit (util-linux is essential
# on Debian; a trimmed image may lack it).
if ! command -v prlimit >/dev/null; then
    packages+=(util-linux)
fi
if [ "${#packages[@]}" -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >/dev/null
fi
