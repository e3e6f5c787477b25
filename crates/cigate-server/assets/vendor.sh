#!/usr/bin/env bash
# Fetches the dashboard's chart library from the npm registry into assets/ui (the
# binary embeds it, so the dashboard works offline). Usage: vendor.sh [chart.js version]
set -euo pipefail
version="${1:-4.6.1}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack "chart.js@$version" --silent >/dev/null && tar xzf chart.js-*.tgz)
# The source map is not shipped; without its comment the browser never asks for it.
grep -v '^//# sourceMappingURL=' "$work/package/dist/chart.umd.min.js" > "$here/ui/chart.umd.min.js"
cp "$work/package/LICENSE.md" "$here/ui/chart.js.LICENSE.md"
echo "chart.js $version vendored into $here/ui"
