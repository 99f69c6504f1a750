#!/usr/bin/env bash
# testnet/demo-effects.sh [N] — the agents that act, all on 127.0.0.1: start
# igor-demo-server, run the pricewatcher agent locally for a few ticks
# (igor-node run), then start an N-node mesh (default 3), publish the
# x402buyer and poster agents to it, show their logs (igor-node logs) and
# what the server counted. Everything it started stops on exit.
#
# DEMO_ADDR (default 127.0.0.1:8402; port 0 picks a free one) is where the
# server listens; the agents run with copies of their manifests pointed at
# it. TICKS (default 5) local ticks, WATCH (default 8) seconds for the
# published agents. Builds bin/igor-node if missing and always rebuilds
# bin/igor-demo-server and the three agents (with build-agents.sh's flags;
# cheap when nothing changed), so it never runs stale (BIN overrides the
# node binary).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
N=${1:-3}
BIN=${BIN:-bin/igor-node}
ADDR=${DEMO_ADDR:-127.0.0.1:8402}
TICKS=${TICKS:-5}
WATCH=${WATCH:-8}
[[ "$N" =~ ^[0-9]+$ && "$N" -ge 1 ]] || { echo "N must be a positive number, got '$N'" >&2; exit 2; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

command -v go >/dev/null || { echo "demo-effects: 'go' not found in PATH" >&2; exit 1; }
[ -x "$BIN" ] || { echo "demo-effects: building $BIN" >&2; go build -o "$BIN" ./cmd/igor-node; }
mkdir -p bin/agents
for a in pricewatcher x402buyer poster; do
  GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 go build -buildmode=c-shared -trimpath -buildvcs=false \
    -o "bin/agents/$a.wasm" "./agents/examples/$a"
  cp "agents/examples/$a/manifest.json" "bin/agents/$a.manifest.json"
done
go build -o bin/igor-demo-server ./testnet/demoserver

DIR=$(mktemp -d "${TMPDIR:-/tmp}/igor-demo-effects.XXXXXX")
srv=
cleanup() {
  "$here/down.sh" "$DIR/net" >/dev/null 2>&1 || true
  if [ -n "$srv" ]; then kill -TERM "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true; fi
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "igor-demo-server on $ADDR"
bin/igor-demo-server --addr "$ADDR" >"$DIR/server.out" 2>"$DIR/server.log" &
srv=$!
for _ in $(seq 1 50); do grep -q '^listening ' "$DIR/server.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening //p' "$DIR/server.out")
[ -n "$url" ] || { echo "demo-effects: the server did not start:" >&2; cat "$DIR/server.log" >&2; exit 1; }
echo "$url (its log: one line per request, shown at the end)"

# manifest NAME: a copy of the agent's manifest with its URL pointed at the server.
manifest() {
  sed "s#http://127.0.0.1:8402#$url#" "bin/agents/$1.manifest.json" >"$DIR/$1.manifest.json"
  echo "$DIR/$1.manifest.json"
}

say "pricewatcher, locally: igor-node run --max-ticks $TICKS"
"$BIN" --home "$DIR/local" --log-level warn run --max-ticks "$TICKS" --tick-interval 300ms \
  --manifest "$(manifest pricewatcher)" bin/agents/pricewatcher.wasm

say "a $N-node mesh"
"$here/up.sh" "$N" "$DIR/net"
dids=()
for a in x402buyer poster; do
  say "publishing $a"
  out=$("$BIN" --home "$DIR/net/n0" publish --json --min-replicas 0 --manifest "$(manifest "$a")" "bin/agents/$a.wasm")
  did=$(echo "$out" | grep -m1 '"did"' | cut -d'"' -f4)
  echo "$a: $did on $(echo "$out" | grep -m1 '"holder"' | cut -d'"' -f4)"
  dids+=("$did")
done

say "letting them run for ${WATCH}s"
sleep "$WATCH" &
wait $! # interruptible: a signal runs the cleanup at once
for k in 0 1; do
  say "igor-node logs ${dids[$k]}"
  "$BIN" --home "$DIR/net/n0" logs "${dids[$k]}" | tail -n 8
done

say "what the server counted"
if command -v curl >/dev/null; then
  echo "GET /sales:       $(curl -fsS "$url/sales")"
  echo "GET /count/stats: $(curl -fsS "$url/count/stats")"
fi
echo "server log (last lines):"
tail -n 6 "$DIR/server.log"
cat <<'NOTE'
(Every sale is a receipt the agent's holder signed with the agent key and the
paywall verified; every POST carried the host's Idempotency-Key, derived from
the journaled intent: keys = applied, without_key = 0. Kill the holder with
kill -9 and run the demo's last steps again: the new holder replays the
journal, and a POST in doubt is sent again under the same key.)
NOTE
say "done"
