#!/usr/bin/env bash
# testnet/up.sh N [DIR] — start N igor-node daemons on 127.0.0.1, each with its
# own home under DIR (default testnet/run), all bootstrapped from node 0.
# Writes DIR/nodes.json and waits until every node sees all N hosts.
# Needs only bash and the built binary (BIN, default bin/igor-node).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
N=${1:?usage: testnet/up.sh N [DIR]}
DIR=${2:-$here/run}
BIN=${BIN:-$here/../bin/igor-node}
SLOTS=${SLOTS:-4}
TICK=${TICK:-200ms}
DRAIN=${DRAIN:-10s} # on SIGTERM, time to hand agents to other custody members
WAIT=${WAIT:-90}
[[ "$N" =~ ^[0-9]+$ && "$N" -ge 1 ]] || { echo "N must be a positive number, got '$N'" >&2; exit 2; }
[ -x "$BIN" ] || { echo "missing $BIN: run 'make build' first" >&2; exit 1; }
if [ -f "$DIR/nodes.json" ]; then
  echo "$DIR already holds a testnet: stop it with testnet/down.sh $DIR" >&2; exit 1
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

start() { # i [bootstrap]
  local i=$1 home="$DIR/n$1"
  mkdir -p "$home"
  rm -f "$home/api.addr"
  local args=(--home "$home" daemon --api 127.0.0.1:0 --slots "$SLOTS" --tick-interval "$TICK" --drain-timeout "$DRAIN")
  [ -n "${2:-}" ] && args+=(--bootstrap "$2")
  # shellcheck disable=SC2206 # DAEMON_ARGS is split into flags on purpose
  [ -n "${DAEMON_ARGS:-}" ] && args+=($DAEMON_ARGS)
  "$BIN" "${args[@]}" >"$home/daemon.out" 2>"$home/daemon.log" &
  echo $! >"$home/pid"
}

wait_file() { # path seconds
  local t=0
  while [ ! -s "$1" ]; do
    sleep 0.1; t=$((t + 1))
    if [ $t -gt $(($2 * 10)) ]; then return 1; fi
  done
}

fail() {
  echo "testnet: $*" >&2
  for f in "$DIR"/n*/daemon.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 5 "$f" >&2; }; done
  "$here/down.sh" "$DIR" >/dev/null 2>&1 || true
  exit 1
}

start 0
wait_file "$DIR/n0/api.addr" 30 || fail "node 0 did not start"
wait_file "$DIR/n0/daemon.out" 5 || true
boot=$(grep -m1 '^addr /ip4/127.0.0.1/tcp/' "$DIR/n0/daemon.out" | cut -d' ' -f2) || true
[ -n "$boot" ] || fail "node 0 printed no TCP address"
for ((i = 1; i < N; i++)); do start "$i" "$boot"; done
for ((i = 0; i < N; i++)); do
  wait_file "$DIR/n$i/api.addr" 30 || fail "node $i did not start"
done

# nodes.json: peer, api, home, pid of every node.
{
  echo "["
  for ((i = 0; i < N; i++)); do
    home="$DIR/n$i"
    peer=$(grep -m1 '^peer ' "$home/daemon.out" | cut -d' ' -f2)
    api=$(tr -d '\n' <"$home/api.addr")
    sep=","; [ $i -eq $((N - 1)) ] && sep=""
    printf '  {"index": %d, "peer": "%s", "api": "%s", "home": "%s", "pid": %d}%s\n' "$i" "$peer" "$api" "$home" "$(cat "$home/pid")" "$sep"
  done
  echo "]"
} >"$DIR/nodes.json"

# The mesh is formed when every node lists all N hosts.
deadline=$((SECONDS + WAIT))
for ((i = 0; i < N; i++)); do
  while :; do
    n=$("$BIN" --home "$DIR/n$i" hosts 2>/dev/null | tail -n +2 | grep -c . || true)
    [ "$n" -ge "$N" ] && break
    [ $SECONDS -ge $deadline ] && fail "node $i sees $n of $N hosts after ${WAIT}s"
    sleep 0.5
  done
done
echo "testnet of $N nodes up in $DIR (nodes.json)"
