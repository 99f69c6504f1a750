#!/usr/bin/env bash
# The portable-agent demo on one machine: run an agent in home A, stop it,
# export its DAG and key, import both into home B, resume it there (same DID,
# tick count continues), and verify the whole lineage — also from the CAR file.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/igor-node}
AGENT=${AGENT:-bin/agents/heartbeat.wasm}
[ -x "$BIN" ] || { echo "missing $BIN: run 'make build'" >&2; exit 1; }
[ -f "$AGENT" ] || { echo "missing $AGENT: run 'make agents'" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/igor-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
A="$work/machine-a" B="$work/machine-b"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "machine A: run the heartbeat agent for ~3 s (10 ticks/s), then SIGINT"
"$BIN" --home "$A" run --budget 1.0 --tick-interval 100ms --checkpoint-every 5 "$AGENT" >"$work/a.out" 2>"$work/a.err" &
pid=$!
sleep 3
kill -INT "$pid"
wait "$pid"
DID=$(head -n1 "$work/a.out")
tail -n 3 "$work/a.out"
echo "agent: $DID"
"$BIN" --home "$A" inspect "$DID"

say "export the agent's DAG (one CAR file) and its key"
"$BIN" --home "$A" export "$DID" -o "$work/agent.car"
"$BIN" --home "$A" keys export "$DID" -o "$work/agent.key"
ls -l "$work/agent.car" "$work/agent.key"

say "machine B: import both and resume: same DID, the tick count continues"
"$BIN" --home "$B" import "$work/agent.car"
"$BIN" --home "$B" keys import "$work/agent.key"
"$BIN" --home "$B" resume --tick-interval 100ms --max-ticks 10 "$DID" 2>"$work/b.err" | tail -n 4

say "verify the whole lineage on machine B, then from a CAR exported there"
"$BIN" --home "$B" verify "$DID"
"$BIN" --home "$B" export "$DID" -o "$work/agent-b.car"
"$BIN" verify "$work/agent-b.car"
say "done: one agent, one DID, one unbroken signed lineage across two homes"
