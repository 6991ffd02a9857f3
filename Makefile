# Cohort: the two commands a fresh machine needs are `make run` and `make test`.

PROMPT ?= What is the capital of Japan?

.PHONY: setup run test test-debug test-release test-serve bench bench-serve

## Install what is missing, fetch the reference model, build the release binary.
setup:
	scripts/setup.sh

## Set up, then generate with the reference model.
run: setup
	.build/release/cohort generate --prompt "$(PROMPT)" --temperature 0 --max-tokens 64

## Unit tests in debug (tiny generated models), then the reference-model tests in release,
## then `cohort serve` on the reference model through the openai client.
test: test-debug test-release test-serve

# Timing-sensitive behaviour runs alone: a timer's lateness while the engine steps (other
# suites' synchronous tests would hold the cooperative threads it measures); then, in a run
# of their own, how fast a killed worker is reported (under the other suites' load a debug
# step takes seconds, and their worker processes would load the timer's cores).
ALONE = EngineResponsivenessTests
KILLED = WorkerGridTests/killed

# Runs across simulated hosts (network namespaces; root only, skipped otherwise), after the
# rest: their process grids would otherwise load the cores that timing checks measure.
HOSTS = SimulatedHostTests

# The kernels and the model on every narrower instruction set too (COHORT_ISA caps what the
# kernels use): the widest path this CPU has runs above, AVX2 and scalar run here.
NARROWER = KernelsTests|ModelRunnerTests

test-debug:
	swift build --build-tests
	swift test --skip-build --skip ReferenceModelTests --skip $(ALONE) --skip "$(KILLED)" --skip $(HOSTS)
	swift test --skip-build --filter $(ALONE)
	swift test --skip-build --filter "$(KILLED)"
	swift test --skip-build --filter $(HOSTS)
	COHORT_ISA=avx2 swift test --skip-build --filter "$(NARROWER)"
	COHORT_ISA=scalar swift test --skip-build --filter "$(NARROWER)"

# A scratch path of its own: `-enable-testing` would otherwise rebuild .build/release (the
# binary `make run` and the benchmarks use) and the next `make run` would rebuild it back.
RELEASE_TESTS = --scratch-path .build-release-tests -c release -Xswiftc -enable-testing

test-release:
	swift build $(RELEASE_TESTS) --build-tests
	swift test $(RELEASE_TESTS) --skip-build --filter ReferenceModelTests

# A live server on the reference model, checked with the openai package, raw SSE streams
# (64 at once), disconnects and prometheus_client's parser.
test-serve:
	swift build -c release --product cohort
	python3 Tests/OpenAIClient/test_serve.py .build/release/cohort

## Cohort's prefill, decode and 8-sequence decode next to llama.cpp's on both reference
## models, side by side in one run (needs llama-cpp-python, which set-up installs).
bench:
	scripts/bench-vs-llamacpp.sh

## `cohort serve` next to llama-cpp-python's server: streamed load at concurrency 1 and 16.
bench-serve:
	scripts/bench-serve.sh
