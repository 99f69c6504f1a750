#!/usr/bin/env bash
# testnet/faults.sh [--minutes M] [--seed S] [--agents A] [--dir DIR] [--json FILE] | --cleanup | --preflight
# The fault suite with real network faults: 5 igor-node daemons, each in a
# network namespace (igorf-1..5, 10.77.0.x) on one bridge (igorf-br);
# silent isolation, one-way loss, link flaps, SIGSTOP of a holder inside a
# tick, kill -9 after a commit. Per fault: one runner per agent, nothing
# committed lost, takeover and rejoin times, needless regroups, stale groups
# and keys left on evicted nodes; 'igor-node verify' of every agent at the
# end. Needs root and 'ip netns' (exit 2 otherwise; --preflight checks only that). Builds bin/igor-node and
# bin/agents if missing and always rebuilds bin/igor-faults. Full usage:
# testnet/faults.sh --help.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
for a in "$@"; do
  if [ "$a" = "--help" ] || [ "$a" = "-h" ]; then
    go build -o bin/igor-faults ./testnet/faults && exec bin/igor-faults --help
  fi
done
if [ "$(id -u)" != 0 ]; then
  echo "faults: the fault suite needs root (network namespaces, veth pairs, a bridge)" >&2
  exit 2
fi
probe="igorf-probe-$$"
if ! ip netns add "$probe" 2>/dev/null || ! ip netns del "$probe" 2>/dev/null; then
  echo "faults: 'ip netns' does not work on this machine (no network namespaces?)" >&2
  exit 2
fi
[ "${1:-}" = "--preflight" ] && exit 0
BIN=${BIN:-bin/igor-node}
command -v go >/dev/null || { echo "faults: 'go' not found in PATH" >&2; exit 1; }
if [ ! -x "$BIN" ]; then
  echo "faults: building $BIN" >&2
  go build -buildvcs=auto -o "$BIN" ./cmd/igor-node
fi
# The harness is small and always rebuilt, so it never runs stale.
go build -o bin/igor-faults ./testnet/faults
if [ ! -f bin/agents/heartbeat.wasm ] || [ ! -f bin/agents/slowtick.wasm ]; then
  echo "faults: building the example agents (bin/agents)" >&2
  bash scripts/build-agents.sh bin/agents >/dev/null
fi
exec bin/igor-faults --bin "$BIN" --agents-dir bin/agents "$@"
