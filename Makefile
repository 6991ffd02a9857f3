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

test-debug:
	swift build --build-tests
	swift test --skip-build --skip ReferenceModelTests

test-release:
	swift build -c release --build-tests -Xswiftc -enable-testing
	swift test -c release -Xswiftc -enable-testing --skip-build --filter ReferenceModelTests

## Cohort's prefill/decode speed next to llama.cpp's on the same file (needs llama-cpp-python).
bench:
	scripts/bench-vs-llamacpp.sh
