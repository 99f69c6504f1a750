#!/usr/bin/env bash
# testnet/scale.sh [--nodes N] [--agents A] [--window S] [--settle S] [--parallel P] [--slots K] [--dir DIR] [--keep] [--json FILE]
#                  [--kill K [--observe S] [--seed X] [--burn]]
# The steady-state scale harness: an N-node local testnet (up.sh, TICK=1s,
# IGOR_DEBUG_PPROF=1) hosting A heartbeat agents published through the API;
# once every agent runs exactly once it measures each daemon's CPU, RSS and
# PSS over a window and prints CPU ms per agent-second and RSS and PSS per
# custody-group membership. With --kill K it then SIGKILLs K nodes at once and samples the
# survivors every 250 ms for --observe seconds: recovery time of the killed
# nodes' agents, survivor stops (expected 0), agents on 2+ nodes, a 5 s time
# series, verify of 10 agents. Builds bin/igor-node and bin/agents if missing and always
# rebuilds bin/igor-scale (BIN overrides the node binary). Full usage:
# testnet/scale.sh --help.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
BIN=${BIN:-bin/igor-node}
command -v go >/dev/null || { echo "scale: 'go' not found in PATH" >&2; exit 1; }
if [ ! -x "$BIN" ]; then
  echo "scale: building $BIN" >&2
  go build -o "$BIN" ./cmd/igor-node
fi
# The harness is small and always rebuilt, so it never runs stale.
go build -o bin/igor-scale ./testnet/scale
if [ ! -f bin/agents/heartbeat.wasm ] || [ ! -f bin/agents/heartbeat.manifest.json ]; then
  echo "scale: building the example agents (bin/agents)" >&2
  bash scripts/build-agents.sh bin/agents >/dev/null
fi
exec bin/igor-scale --bin "$BIN" --agent bin/agents/heartbeat.wasm --testnet testnet "$@"
