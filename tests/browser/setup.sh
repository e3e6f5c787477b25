#!/usr/bin/env bash
# Installs the pinned Node packages (playwright-core to drive Debian's Chromium, and
# Truto's Link SDK, unmodified) into tests/browser/node_modules for the `browser`
# integration test. Never downloads a browser: the test uses /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null 2>&1; then
  echo "browser: npm not found" >&2
  exit 1
fi
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix . --no-audit --no-fund --loglevel=error
node -e 'require.resolve("playwright-core"); require.resolve("@truto/truto-link-sdk/package.json")' \
  && echo "browser: installed with node $(node --version)"
