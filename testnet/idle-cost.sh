#!/usr/bin/env bash
# testnet/idle-cost.sh [N] [SECONDS] — the cost of an idle mesh: start an
# N-node testnet (default 10) with up.sh in a temporary directory, let it
# settle for 5 s, then measure each daemon over a SECONDS window (default 30):
# CPU time (utime+stime from /proc/PID/stat) as % of one core, and resident
# memory (VmRSS from /proc/PID/status) at the start and end of the window.
# Prints one row per node and the mean; always tears the testnet down.
# Needs only bash, coreutils, Linux /proc and the built binary (BIN, default
# bin/igor-node; SLOTS and TICK are passed to up.sh as usual).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
N=${1:-10}
SECS=${2:-30}
SETTLE=5
export BIN=${BIN:-$here/../bin/igor-node}
[[ "$N" =~ ^[0-9]+$ && "$N" -ge 1 ]] || { echo "N must be a positive number, got '$N'" >&2; exit 2; }
[[ "$SECS" =~ ^[0-9]+$ && "$SECS" -ge 1 ]] || { echo "SECONDS must be a positive number, got '$SECS'" >&2; exit 2; }
[ -x "$BIN" ] || { echo "missing $BIN: run 'make build' first" >&2; exit 1; }
[ -r /proc/self/stat ] || { echo "idle-cost.sh needs Linux /proc" >&2; exit 1; }
HZ=$(getconf CLK_TCK)

DIR=$(mktemp -d "${TMPDIR:-/tmp}/igor-idle-cost.XXXXXX")
cleanup() {
  "$here/down.sh" "$DIR" >&2 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A foreground sleep defers the signal traps until it ends; waiting on a
# background sleep lets TERM/INT tear the testnet down at once.
nap() {
  sleep "$1" &
  wait $!
}

echo "starting $N nodes in $DIR ..." >&2
"$here/up.sh" "$N" "$DIR" >&2
echo "settling ${SETTLE}s, then measuring ${SECS}s" >&2
nap "$SETTLE"

pids=()
for ((i = 0; i < N; i++)); do pids+=("$(cat "$DIR/n$i/pid")"); done

cpu_ticks() { # pid -> utime+stime in clock ticks
  local s
  s=$(<"/proc/$1/stat") || return 1
  s=${s##*) } # drop "pid (comm) ": comm may hold spaces and parentheses
  local -a f
  read -r -a f <<<"$s"
  # f[0] is field 3 (state), so utime (field 14) is f[11] and stime f[12].
  echo $((f[11] + f[12]))
}

rss_kib() { # pid -> VmRSS in KiB
  local k v _
  while read -r k v _; do
    if [ "$k" = "VmRSS:" ]; then echo "$v"; return 0; fi
  done <"/proc/$1/status"
  return 1
}

# fixed2 num den -> num/den with two decimals (integer arithmetic, rounded)
fixed2() {
  local q=$(((($1) * 200 / ($2) + 1) / 2))
  printf '%d.%02d' $((q / 100)) $((q % 100))
}

declare -a t0 r0 t1 r1
for i in "${!pids[@]}"; do
  t0[i]=$(cpu_ticks "${pids[i]}") || { echo "node $i (pid ${pids[i]}) is not running" >&2; exit 1; }
  r0[i]=$(rss_kib "${pids[i]}")
done
w0=$(date +%s%N)
nap "$SECS"
for i in "${!pids[@]}"; do
  t1[i]=$(cpu_ticks "${pids[i]}") || { echo "node $i (pid ${pids[i]}) died during the window" >&2; exit 1; }
  r1[i]=$(rss_kib "${pids[i]}")
done
w1=$(date +%s%N)
wall_ms=$(((w1 - w0) / 1000000))

# CPU % of one core = ticks/HZ / wall × 100 = ticks × 100000 / (HZ × wall_ms)
printf '%-5s %10s %12s %14s %12s\n' node cpu_% rss_MiB rss_start_MiB cpu_s
sum_ticks=0 sum_rss=0 sum_rss0=0
for i in "${!pids[@]}"; do
  dt=$((t1[i] - t0[i]))
  sum_ticks=$((sum_ticks + dt)) sum_rss=$((sum_rss + r1[i])) sum_rss0=$((sum_rss0 + r0[i]))
  printf '%-5s %10s %12s %14s %12s\n' "n$i" \
    "$(fixed2 "$dt * 100000" "$HZ * $wall_ms")" "$(fixed2 "${r1[i]}" 1024)" "$(fixed2 "${r0[i]}" 1024)" "$(fixed2 "$dt" "$HZ")"
done
printf '%-5s %10s %12s %14s %12s\n' mean \
  "$(fixed2 "$sum_ticks * 100000" "$HZ * $wall_ms * $N")" "$(fixed2 "$sum_rss" "1024 * $N")" \
  "$(fixed2 "$sum_rss0" "1024 * $N")" "$(fixed2 "$sum_ticks" "$HZ * $N")"
echo "total: $(fixed2 "$sum_ticks * 100000" "$HZ * $wall_ms")% of one core for $N idle nodes over $(fixed2 "$wall_ms" 1000) s (CLK_TCK $HZ: one tick is $(fixed2 "100000" "$HZ * $wall_ms")% per node)"
