# wpm: the two commands a new machine needs are `make run` and `make test`.
# Each target does the set-up it needs first (Debian packages, configure, build).

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
DATA       ?= ./var/wpm
CMAKE_ARGS ?=
# malloc on transparent huge pages (as deploy/wpmd.service runs wpmd): a policy
# pass over 100,000 WPARs spends much of its time on TLB misses without them.
MALLOC_ENV ?= GLIBC_TUNABLES=glibc.malloc.hugetlb=1

.PHONY: all deps configure build run test bench soak fuzz check clean

all: build

deps:
	@bash deploy/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# Starts wpmd in the foreground with its embedded default; Ctrl-C stops it.
run: build
	@mkdir -p $(DATA)
	$(MALLOC_ENV) ./$(BUILD)/bin/wpmd --data $(DATA)

# The whole suite: unit, integration, crash, corruption, disk-full and replay tests.
test: build
	cd $(BUILD) && ctest --output-on-failure --timeout 900

# Benchmarks print their figures and the physical limit measured in the same run.
bench: build
	./$(BUILD)/bin/wpm-bench-store
	./$(BUILD)/bin/wpm-bench-compat
	./$(BUILD)/bin/wpm-bench-fleet
	./$(BUILD)/bin/wpm-bench-deploy
	./$(BUILD)/bin/wpm-bench-metrics
	$(MALLOC_ENV) ./$(BUILD)/bin/wpm-bench-policy
	$(MALLOC_ENV) ./$(BUILD)/bin/wpm-bench-simulate
	$(MALLOC_ENV) ./$(BUILD)/bin/wpm-bench-simulate --store
	bash tests/bench/idle_memory.sh $(BUILD)/bin/wpmd
	bash tests/bench/agent_bench.sh $(BUILD)
	bash tests/bench/relocation_bench.sh $(BUILD)

# Long fault runs, bounded: hundreds of kill -9 rounds of the store, 500 power cuts
# beneath it, and wpmd killed at every step of a relocation (a few of each run in
# `make test`).
soak: build
	cd $(BUILD) && WPM_CRASH_ROUNDS=300 ./tests/integration/integration_crash_test
	cd $(BUILD) && WPM_POWER_CUT_ROUNDS=500 ./eventstore/eventstore_tests --gtest_filter='PowerCut.*' 
	cd $(BUILD) && WPM_RELOCATION_KILL_POINTS=all ./tests/integration/integration_lifecycle_test \
		--gtest_filter='*KilledAtItsSteps*'

# Every decoder of untrusted bytes fuzzed with AFL++ (GCC, assembler instrumentation) under ASan and
# UBSan, FUZZ_SECONDS per target (tests/fuzz/README.md); `make test` replays the
# corpus with mutations.
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
fuzz: deps
	@command -v afl-g++-fast >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends afl++
	@AFL_CC_COMPILER=GCC CC=afl-gcc CXX=afl-g++ cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@AFL_CC_COMPILER=GCC AFL_USE_ASAN=1 AFL_USE_UBSAN=1 AFL_QUIET=1 cmake --build $(FUZZ_BUILD) -j $(JOBS) --target wpm-fuzz
	bash tests/fuzz/run.sh $(FUZZ_BUILD)/bin/wpm-fuzz $(FUZZ_SECONDS)

# Unit tests under AddressSanitizer and UndefinedBehaviorSanitizer, in a separate folder.
check: deps
	@cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DWPM_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -L unit

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
