#!/usr/bin/env bash
# make check: formatting, vet, module tidiness, the package dependency rules of docs/DECISIONS.md, guest builds.
set -euo pipefail
cd "$(dirname "$0")/.."
mod=$(go list -m)
fail=0
bad=$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)
if [ -n "$bad" ]; then echo "gofmt needed: $bad"; fail=1; fi
go vet ./... || fail=1
cp go.mod /tmp/check.go.mod; cp go.sum /tmp/check.go.sum
go mod tidy
if ! diff -q go.mod /tmp/check.go.mod >/dev/null || ! diff -q go.sum /tmp/check.go.sum >/dev/null; then
  echo "go mod tidy changed go.mod/go.sum: commit the tidy result"; fail=1
fi
# Forbidden imports (arrows point down: cmd -> node -> {hosting, dht, contentstore, wasmexec, agents}).
check_deps() { # pkg-pattern, forbidden-regex, why
  for p in $(go list "$1" 2>/dev/null); do
    hits=$(go list -deps -f '{{.ImportPath}}' "$p" | grep -E "$2" | grep -v "^$p\$" || true)
    if [ -n "$hits" ]; then echo "$p must not import: $hits ($3)"; fail=1; fi
  done
}
check_deps "./agents/..." "^$mod/(node|hosting|dht|contentstore|wasmexec|cmd)(/|\$)" "agents is the leaf data model"
check_deps "./contentstore/..." "^$mod/(node|hosting|dht|agents|wasmexec|cmd)(/|\$)" "contentstore imports no project package"
check_deps "./dht/..." "^$mod/(node|hosting|agents|contentstore|wasmexec|cmd)(/|\$)" "dht knows nothing of agents"
check_deps "./wasmexec/..." "^$mod/(node|hosting|dht|contentstore|cmd)(/|\$)" "wasmexec may import only agents"
check_deps "./hosting/..." "^$mod/(node|dht|cmd)(/|\$)" "hosting declares the interfaces it needs"
check_deps "./node/..." "^$mod/cmd(/|\$)" "node is below cmd"
# cmd/ is thin: it imports node (the surface, node/surface.go), agents' data
# types and two leaf helpers — not the layers under node (DECISIONS D55).
for p in $(go list ./cmd/...); do
  bad=$(go list -f '{{join .Imports "\n"}}' "$p" | grep "^$mod/" | grep -v -E "^$mod/(node|agents|internal/amount|internal/buildinfo)\$" || true)
  if [ -n "$bad" ]; then echo "$p must import only node, agents and internal/{amount,buildinfo}: $bad"; fail=1; fi
done
# The lease protocol is a pure state machine: the standard library only.
nonstd=$(go list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./hosting/lease | grep -v -e "^$mod/hosting/lease\$" -e "^\$" || true)
if [ -n "$nonstd" ]; then echo "hosting/lease must import only the standard library: $nonstd"; fail=1; fi
# Guests must build with the stock toolchain.
GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o /dev/null ./agents/examples/heartbeat || fail=1
exit $fail
