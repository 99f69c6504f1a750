#!/usr/bin/env bash
# build-agents.sh OUT_DIR — build every agent under agents/examples to
# OUT_DIR/<name>.wasm and copy its manifest to OUT_DIR/<name>.manifest.json
# (the sidecar convention: X.wasm -> X.manifest.json).
#
# Stock Go toolchain only. The flags match internal/testagents so both give
# byte-identical modules: -trimpath and -buildvcs=false keep the bytes (and so
# the module CID) independent of the checkout path and of git state.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
	echo "usage: $0 OUT_DIR" >&2
	exit 2
fi
out=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command -v go >/dev/null || { echo "build-agents: 'go' not found in PATH" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)

cd "$root"
built=0
for dir in agents/examples/*/; do
	name=$(basename "$dir")
	if [[ ! -f "$dir/manifest.json" ]]; then
		echo "build-agents: $dir has no manifest.json" >&2
		exit 1
	fi
	tmp="$out/.$name.wasm.tmp"
	if ! GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 go build -buildmode=c-shared -trimpath -buildvcs=false \
		-o "$tmp" "./agents/examples/$name"; then
		rm -f "$tmp"
		echo "build-agents: building $name failed" >&2
		exit 1
	fi
	mv -f "$tmp" "$out/$name.wasm"
	cp "$dir/manifest.json" "$out/.$name.manifest.json.tmp"
	mv -f "$out/.$name.manifest.json.tmp" "$out/$name.manifest.json"
	printf '%-10s %9d bytes\n' "$name" "$(stat -c %s "$out/$name.wasm")"
	built=$((built + 1))
done
if [[ $built -eq 0 ]]; then
	echo "build-agents: no agents found under agents/examples" >&2
	exit 1
fi
