#!/usr/bin/env bash
# Fetch the JavaScript that BertViz needs (require.js, d3, jQuery) from the npm registry into
# static/vendor/, which Streamlit serves at /app/static/vendor/. Not committed; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=static/vendor
mkdir -p "$dest"
if [ -f "$dest/require.js" ] && [ -f "$dest/d3.min.js" ] && [ -f "$dest/jquery.min.js" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "warning: npm not found; BertViz views will be unavailable offline (install Node.js/npm and re-run make)" >&2
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && npm pack --silent requirejs@2.3.6 d3@5.7.0 jquery@2.2.4 >/dev/null )
for pkg in "$tmp"/*.tgz; do
  mkdir -p "$tmp/x" && tar -xzf "$pkg" -C "$tmp/x"
  [ -f "$tmp/x/package/require.js" ] && cp "$tmp/x/package/require.js" "$dest/require.js"
  [ -f "$tmp/x/package/dist/d3.min.js" ] && cp "$tmp/x/package/dist/d3.min.js" "$dest/d3.min.js"
  [ -f "$tmp/x/package/dist/jquery.min.js" ] && cp "$tmp/x/package/dist/jquery.min.js" "$dest/jquery.min.js"
  rm -rf "$tmp/x"
done
ls "$dest"
