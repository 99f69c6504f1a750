#!/usr/bin/env bash
# testnet/demo.sh [N] — start an N-node local mesh (default 5), publish the
# heartbeat agent, show where it runs, query it by DID from every node,
# verify its lineage over the mesh from a node that never hosted it, stop.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
N=${1:-5}
BIN=${BIN:-$here/../bin/igor-node}
AGENT=${AGENT:-$here/../bin/agents/heartbeat.wasm}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/igor-testnet.XXXXXX")
trap '"$here/down.sh" "$DIR" >/dev/null; rm -rf "$DIR"' EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "starting a $N-node mesh on 127.0.0.1"
"$here/up.sh" "$N" "$DIR"
"$BIN" --home "$DIR/n0" hosts

say "publishing the heartbeat agent from node 0"
out=$("$BIN" --home "$DIR/n0" publish --json "$AGENT")
echo "$out"
DID=$(echo "$out" | grep -m1 '"did"' | cut -d'"' -f4)
HOLDER=$(echo "$out" | grep -m1 '"holder"' | cut -d'"' -f4)

say "waiting for its first checkpoints"
sleep 3
for ((i = 0; i < N; i++)); do
  printf 'node %d: ' "$i"
  "$BIN" --home "$DIR/n$i" agent --json "$DID" | grep -E '"(holder|tick|seq)"' | tr -d '\n ,'; echo
done

say "full lineage check over the mesh, from a node that never hosted the agent"
for ((i = 0; i < N; i++)); do
  peer=$(grep -m1 '^peer ' "$DIR/n$i/daemon.out" | cut -d' ' -f2)
  if [ "$peer" != "$HOLDER" ]; then
    "$BIN" --home "$DIR/n$i" verify "$DID"
    break
  fi
done
say "done: agent $DID runs on $HOLDER"
