#!/usr/bin/env bash
# testnet/down.sh [DIR] — stop every daemon of the testnet in DIR (SIGTERM: each
# checkpoints the agents it hosts; SIGKILL after 30 s), then remove nodes.json.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DIR=${1:-$here/run}
[ -d "$DIR" ] || { echo "no testnet in $DIR"; exit 0; }
pids=()
for f in "$DIR"/n*/pid; do
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null && pids+=("$pid"); fi
done
for pid in "${pids[@]}"; do
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { echo "pid $pid did not stop in 30 s: killing it" >&2; kill -KILL "$pid"; }
done
rm -f "$DIR"/n*/pid "$DIR"/n*/api.addr "$DIR/nodes.json"
echo "testnet in $DIR stopped (${#pids[@]} daemons)"
