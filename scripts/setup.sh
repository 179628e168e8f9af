#!/bin/sh
# Installs everything Lifeboat needs on a fresh Debian machine with Node >= 20 and npm,
# then builds the workspace. Safe to run again: every step is skipped when already done.
set -eu
cd "$(dirname "$0")/.."
export npm_config_nodedir="${npm_config_nodedir:-/usr}"   # node-gyp builds better-sqlite3 against local headers
export TURBO_TELEMETRY_DISABLED=1
export COREPACK_ENABLE_DOWNLOAD_PROMPT=0

if ! command -v pnpm >/dev/null 2>&1 || ! pnpm -v 2>/dev/null | grep -q '^10\.'; then
  echo "setup: installing pnpm 10 with npm" >&2
  npm install -g pnpm@10 >/dev/null
fi

# Debian tools used by tests and benchmarks (sqlite3 CLI as an independent SQLite client;
# Ceph's radosgw as the real S3 server the S3 tests start through @lifeboat/testkit; the age and
# gpg CLIs for the codecs' interoperability tests).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=""
  for pkg in sqlite3 radosgw ceph-mon ceph-osd ceph-common age gnupg zstd; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    echo "setup: apt-get install$missing" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing) >/dev/null
  fi
fi

pnpm install --frozen-lockfile=false --reporter=silent
pnpm --silent run build >/dev/null
