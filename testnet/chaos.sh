#!/usr/bin/env bash
# testnet/chaos.sh [DIR] [--minutes M | --seconds S] [--nodes N] [--agents A] [--seed S]
# The chaos harness: random kill -9 and restart of one node at a time on a
# local testnet while counter agents run, then per agent alive / forks /
# verify / lost / largest tick gap; exit 1 if any agent failed. Builds
# bin/igor-node, bin/igor-chaos and bin/agents if missing (BIN overrides the
# node binary). Full usage: testnet/chaos.sh --help.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
BIN=${BIN:-bin/igor-node}
command -v go >/dev/null || { echo "chaos: 'go' not found in PATH" >&2; exit 1; }
if [ ! -x "$BIN" ]; then
  echo "chaos: building $BIN" >&2
  go build -o "$BIN" ./cmd/igor-node
fi
# The harness is small and always rebuilt, so it never runs stale.
go build -o bin/igor-chaos ./testnet/chaos
if [ ! -f bin/agents/counter.wasm ] || [ ! -f bin/agents/counter.manifest.json ]; then
  echo "chaos: building the example agents (bin/agents)" >&2
  bash scripts/build-agents.sh bin/agents >/dev/null
fi
exec bin/igor-chaos --bin "$BIN" --agent bin/agents/counter.wasm --testnet testnet "$@"
