#!/usr/bin/env bash
# Runs every Fuzz* target in the module for a short time each (go test -fuzz takes one target at a time).
set -euo pipefail
t="${1:-10s}"
cd "$(dirname "$0")/.."
fail=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for fz in $(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)' "$dir"/*_test.go 2>/dev/null | awk '{print $2}' | sed 's/(.*//' | sort -u); do
    echo "fuzz $pkg $fz ($t)"
    if ! go test -run '^$' -fuzz "^${fz}\$" -fuzztime "$t" -fuzzminimizetime 5s "$pkg" >/tmp/fuzz.$$.log 2>&1; then
      cat /tmp/fuzz.$$.log; fail=1
    fi
  done
done
rm -f /tmp/fuzz.$$.log
exit $fail
