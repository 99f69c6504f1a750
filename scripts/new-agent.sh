#!/usr/bin/env bash
# scripts/new-agent.sh DIR [MODULE] — start a Go agent outside this repository.
#
# Copies the heartbeat example (main.go, its test, manifest.json) into DIR,
# which must not exist yet, and writes a go.mod for MODULE (default
# example.com/<name of DIR>) that requires github.com/igor-mesh/igor-node
# through a `replace` pointing at this checkout: the module path is not
# served by a module proxy, so `go get` cannot fetch it (docs/SDK.md).
# The SDK imports only the standard library, so no go.sum is needed.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || -z "$1" ]]; then
	echo "usage: $0 DIR [MODULE]" >&2
	exit 2
fi
dir=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -e "$dir" ]]; then
	echo "new-agent: $dir already exists; name a new directory" >&2
	exit 2
fi
module=${2:-example.com/$(basename "$dir")}
command -v go >/dev/null || { echo "new-agent: 'go' not found in PATH" >&2; exit 1; }

mkdir -p "$dir"
cp "$root/agents/examples/heartbeat/main.go" "$root/agents/examples/heartbeat/heartbeat_test.go" "$root/agents/examples/heartbeat/manifest.json" "$dir/"
goversion=$(sed -n 's/^go //p' "$root/go.mod")
cat >"$dir/go.mod" <<MOD
module $module

go $goversion

require github.com/igor-mesh/igor-node v0.0.0

// The SDK from this checkout: github.com/igor-mesh/igor-node is not served
// by a module proxy. Point it at your own checkout if you move this file.
replace github.com/igor-mesh/igor-node => $root
MOD
name=$(basename "$dir")
cat <<MSG
created $dir (module $module) from agents/examples/heartbeat
  cd $dir && go test ./...                       # unit test with the SDK's mock backend
  GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -buildvcs=false -o $name.wasm .
  cp manifest.json $name.manifest.json && igor-node run $name.wasm
MSG
