#!/usr/bin/env bash
# Installs Debian's chromium for the status page test (make ui-test) when it is
# missing: as root, or through sudo. Fails with what to do otherwise.
set -euo pipefail
command -v chromium >/dev/null && exit 0
if ! command -v apt-get >/dev/null; then
  echo "install-chromium: chromium is missing and this is not a Debian-like system: install chromium (the status page test runs it headless)" >&2
  exit 1
fi
run=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then run=(sudo); else
    echo "install-chromium: chromium is missing; run as root, or: apt-get install chromium" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing chromium (Debian package) for the status page test..." >&2
"${run[@]}" apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 ||
  { "${run[@]}" apt-get update >/dev/null && "${run[@]}" apt-get install -y --no-install-recommends chromium >/dev/null; }
command -v chromium >/dev/null
