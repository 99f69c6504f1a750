# igor-node — see README.md. Targets are listed by `make help`.
GO        ?= go
BIN       := bin
AGENTS    := $(BIN)/agents
PKGS      := ./...
# Packages whose tests are cheap enough for the race detector on 2 cores.
RACE_PKGS := ./contentstore/... ./agents/... ./hosting/... ./node/... ./dht/...
# The one node test left out of the race run: 30 s under -race of
# connection floods, which the run without it covers (make race-all runs it).
# Until session 15 it skipped 15 mesh tests, 20-60 s each under -race: most
# of that was compiling the same agents in every node (TEST_ENV below).
RACE_SKIP := ^(TestHostileConnectionFlood)$$
FUZZTIME  ?= 5s

.PHONY: help build agents test race-all ui-test ui-deps crash chaos-short soak fuzz fuzz-short bench bench-idle bench-scale faults check demo demo-effects demo-local testnet-up testnet-down clean

help:
	@echo "build       bin/igor-node"
	@echo "agents      every example agent -> bin/agents/<name>.wasm (+ .manifest.json)"
	@echo "test        everything make test runs in CI (unit, race, e2e, status page in headless chromium, short chaos, short fuzz)"
	@echo "race-all    every test of the race packages under -race (make test skips one flood test there)"
	@echo "ui-test     the status page in headless chromium (installs Debian's chromium if missing)"
	@echo "crash       kill -9 at random points while checkpointing, receiving blocks, writing keys (IGOR_CRASH_TRIALS=200); fsck after each"
	@echo "soak        60 000 random lease schedules, a 5-min engine simulation (40 groups, 5 nodes), then a 10-min chaos run: 7 nodes, 20 agents, kill -9/restart and partitions"
	@echo "bench       benchmarks; results go in BENCHMARKS.md"
	@echo "bench-scale steady-state cost of 300 then 1000 heartbeat agents on 3 daemons (CPU ms/agent-s, RSS and PSS/membership; SCALE_ARGS adds flags); a 1,000-node engine simulation of mass failover"
	@echo "faults      real network faults in network namespaces (root): 5 daemons, isolation, one-way loss, flaps, SIGSTOP mid-tick, kill -9; ~8 min (FAULTS_ARGS adds flags)"
	@echo "check       gofmt, vet, go mod tidy diff, forbidden imports, wasip1 build"
	@echo "demo        a 5-node local mesh: publish an agent, query it by DID from every node"
	@echo "demo-effects igor-demo-server on 127.0.0.1:8402; pricewatcher run locally; x402buyer and poster on a 3-node mesh"
	@echo "demo-local  run -> stop -> export -> import into a 2nd home -> resume -> verify"
	@echo "testnet-up  N=5 daemons under testnet/run (testnet-down stops them)"

# -buildvcs=auto stamps the git revision for `igor-node version` even where GOFLAGS says -buildvcs=false.
build:
	$(GO) build -buildvcs=auto -o $(BIN)/igor-node ./cmd/igor-node

agents:
	bash scripts/build-agents.sh $(AGENTS)

# Compiled WASM shared by every runtime make test starts, in-process nodes and
# daemons alike (node.EnvWasmCache): each agent is compiled once per run, not
# once per home — compiling was ~2/3 of hosting's race run. Tests of the
# compiler and of a cold cache keep their own directories.
TEST_ENV  := IGOR_WASM_CACHE=$(CURDIR)/$(BIN)/test-wasm-cache

# The test suite builds what it needs (the binary for e2e tests, example agents on demand).
test: build agents
	$(TEST_ENV) $(GO) test -count=1 -timeout 20m $(PKGS)
	$(TEST_ENV) $(GO) test -count=1 -race -short -timeout 20m -skip '$(RACE_SKIP)' $(RACE_PKGS)
	$(TEST_ENV) $(MAKE) ui-test
	$(TEST_ENV) $(MAKE) chaos-short
	$(MAKE) fuzz-short

# Every test of RACE_PKGS under the race detector.
race-all:
	$(TEST_ENV) $(GO) test -count=1 -race -short -timeout 40m $(RACE_PKGS)

# The status page in headless Chromium (Debian's chromium package, installed here if missing).
ui-test: ui-deps
	IGOR_UI_TEST=1 $(GO) test -count=1 -timeout 5m -run TestStatusPageInChromium ./node/

ui-deps:
	@bash scripts/install-chromium.sh

crash: build agents
	IGOR_CRASH_TRIALS=200 $(GO) test -count=1 -timeout 60m -v -run 'TestCrash' ./cmd/igor-node

# A short chaos run: 5 daemons, 3 agents, kill -9 and restart for 45 s.
chaos-short: build agents
	bash testnet/chaos.sh $(BIN)/chaos-ci --seconds 45 --nodes 5 --agents 3 --seed 1

soak: build agents
	LEASE_SIM_SCHEDULES=60000 $(GO) test -count=1 -timeout 60m -run TestRandomSchedules ./hosting/lease
	IGOR_ENGINE_SIM_SECONDS=300 $(GO) test -count=1 -timeout 30m -run TestEngineSimManyGroups ./hosting/custody
	SLOTS=8 bash testnet/chaos.sh $(BIN)/chaos-soak --minutes 10 --nodes 7 --agents 20 --partitions 0.3

# Each fuzz target for FUZZTIME (5 s: ~30 targets must stay under ~6 min in make test); make fuzz runs 2 min each.
fuzz-short:
	@bash scripts/fuzz.sh $(FUZZTIME)

fuzz:
	@bash scripts/fuzz.sh 2m

bench: build agents
	$(GO) test -run '^$$' -bench . -skip BenchmarkPackChurn -benchmem -count 1 -timeout 60m ./contentstore/... ./agents/... ./wasmexec/... ./hosting/... ./dht/... ./node/... | tee $(BIN)/bench.txt
	$(GO) test -run '^$$' -bench BenchmarkPackChurn -benchtime 300000x -count 1 ./contentstore/ | tee -a $(BIN)/bench.txt
	$(GO) test -run '^$$' -bench BenchmarkFailover -benchtime 1x -timeout 60m -v ./cmd/igor-node/ | tee -a $(BIN)/bench.txt

# The idle cost of a 10-node local mesh (CPU % and RSS per daemon over 30 s).
bench-idle: build
	bash testnet/idle-cost.sh 10 30

# Steady-state cost at scale: 3 daemons with 300, then 1000 heartbeat agents
# (testnet/scale.sh --help; e.g. SCALE_ARGS="--window 120 --json bin/scale.json").
SCALE_ARGS ?=
bench-scale: build agents
	bash testnet/scale.sh --nodes 3 --agents 300 $(SCALE_ARGS)
	bash testnet/scale.sh --nodes 3 --agents 1000 $(SCALE_ARGS)
	IGOR_ENGINE_SIM_NODES=1000 IGOR_ENGINE_SIM_AGENTS=3000 IGOR_ENGINE_SIM_KILL=50 $(GO) test -count=1 -timeout 30m -v -run TestEngineSimMassFailover ./hosting/custody

# Real faults in network namespaces (needs root; not part of make test):
# ~5 min of faults, a 75 s final settle, verify (testnet/faults.sh --help).
FAULTS_ARGS ?=
# It refuses (exit 2) before building when not root or without 'ip netns'.
faults:
	@bash testnet/faults.sh --preflight
	$(MAKE) build agents
	bash testnet/faults.sh $(FAULTS_ARGS)

check:
	@bash scripts/check.sh

demo: build agents
	bash testnet/demo.sh 5

demo-effects: build
	bash testnet/demo-effects.sh 3

N ?= 5
testnet-up: build agents
	bash testnet/up.sh $(N)

testnet-down:
	bash testnet/down.sh

demo-local: build agents
	bash scripts/demo-local.sh

clean:
	rm -rf $(BIN)
