# Cohort: the two commands a fresh machine needs are `make run` and `make test`.

PROMPT ?= What is the capital of Japan?

.PHONY: setup run test test-debug test-release bench bench-llamacpp

## Install what is missing, fetch the reference model, build the release binary.
setup:
	scripts/setup.sh

## Set up, then generate with the reference model.
run: setup
	.build/release/cohort generate --prompt "$(PROMPT)" --temperature 0 --max-tokens 64

## Unit tests in debug (tiny generated models), then the reference-model tests in release.
test: test-debug test-release

# Timing-sensitive behaviour (a timer's lateness while the engine steps) runs alone: other
# suites' synchronous tests would hold the cooperative threads it measures.
ALONE = EngineResponsivenessTests

test-debug:
	swift build --build-tests
	swift test --skip-build --skip ReferenceModelTests --skip $(ALONE)
	swift test --skip-build --filter $(ALONE)

# A scratch path of its own: `-enable-testing` would otherwise rebuild .build/release (the
# binary `make run` and the benchmarks use) and the next `make run` would rebuild it back.
RELEASE_TESTS = --scratch-path .build-release-tests -c release -Xswiftc -enable-testing

test-release:
	swift build $(RELEASE_TESTS) --build-tests
	swift test $(RELEASE_TESTS) --skip-build --filter ReferenceModelTests

## Cohort's prefill/decode speed next to llama.cpp's on the same file (needs llama-cpp-python).
bench:
	scripts/bench-vs-llamacpp.sh
