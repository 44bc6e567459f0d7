# ebb: the entry points. `make demo` and `make test` are all a new machine needs.
SHELL := /bin/bash
CARGO ?= cargo
WASM_TARGET := wasm32-wasip1
WASM_OUT := target/$(WASM_TARGET)/wasm
EBB := target/release/ebb

.PHONY: all wasm build test demo bench lint fmt clean

all: build

## wasm: build the filter (size-tuned profile) and copy it to dist/ebb.wasm
wasm:
	$(CARGO) build --target $(WASM_TARGET) --profile wasm -p ebb-plugin
	@mkdir -p dist
	cp $(WASM_OUT)/ebb_plugin.wasm dist/ebb.wasm
	@echo "dist/ebb.wasm: $$(stat -c %s dist/ebb.wasm) bytes"

## build: the filter and the ebb command (release)
build: wasm
	$(CARGO) build --release -p ebb-harness

## test: every test, against a freshly built dist/ebb.wasm
test: wasm
	$(CARGO) test --workspace --exclude ebb-plugin $(foreach f,$(wildcard tests/filters/*),--exclude ebb-testfilter-$(notdir $(f)))

## demo: drive the real filter through the harness host
demo: build
	./scripts/demo.sh

## bench: host and filter benchmarks (figures go to docs/benchmarks.md)
bench: wasm
	$(CARGO) bench -p ebb-harness

## lint: formatting and clippy with warnings as errors, native and wasm
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --exclude ebb-plugin $(foreach f,$(wildcard tests/filters/*),--exclude ebb-testfilter-$(notdir $(f))) --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) -p ebb-plugin $(foreach f,$(wildcard tests/filters/*),-p ebb-testfilter-$(notdir $(f))) -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf dist out
