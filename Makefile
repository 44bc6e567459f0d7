# ebb: the entry points. `make demo` and `make test` are all a new machine needs.
SHELL := /bin/bash
CARGO ?= cargo
WASM_TARGET := wasm32-wasip1
WASM_OUT := target/$(WASM_TARGET)/wasm
EBB := target/release/ebb

# Test filters under tests/filters/ are wasm-only crates; native commands leave them out.
NATIVE_EXCLUDES := --exclude ebb-plugin $(foreach f,$(wildcard tests/filters/*),--exclude ebb-testfilter-$(notdir $(f)))

.PHONY: all wasm build test demo bench bench-proxy fuzz lint fmt clean prereqs wasm-target

all: build

## wasm-target: the wasm32-wasip1 target for the pinned toolchain, added when it is missing
wasm-target:
	@rustup target list --installed 2>/dev/null | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

## wasm: build the filter (size-tuned profile) and copy it to dist/ebb.wasm
wasm: wasm-target
	$(CARGO) build --target $(WASM_TARGET) --profile wasm -p ebb-plugin
	@mkdir -p dist
	cp $(WASM_OUT)/ebb_plugin.wasm dist/ebb.wasm
	@echo "dist/ebb.wasm: $$(stat -c %s dist/ebb.wasm) bytes"

## build: the filter and the ebb command (release)
build: wasm
	$(CARGO) build --release -p ebb-harness

## prereqs: what the tests run besides cargo (checked first, so a missing tool is named at once)
prereqs:
	@missing=""; for t in promtool prometheus prometheus-alertmanager; do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make test needs:$$missing. Install Debian's 'prometheus' and 'prometheus-alertmanager' packages" >&2; \
	  echo "(sudo apt-get install prometheus prometheus-alertmanager; tests/gameday runs both), or run .ci/run," >&2; \
	  echo "which installs everything the tests need." >&2; exit 2; fi

## test: every test, against a freshly built dist/ebb.wasm. The release profile, as `make build`
## uses: wasmtime is compiled once for both. Every test binary runs even when one fails. The real
## filter's end-to-end tests run a second time with the host playing `strict` (Envoy's and Kong's
## ngx_wasm_module's refusals at once), so a change that works only in Envoy fails here.
test: prereqs wasm
	@status=0; \
	$(CARGO) test --release --no-fail-fast --workspace $(NATIVE_EXCLUDES) || status=$$?; \
	echo "== tests/filter again, the host playing strict (EBB_TEST_HOST_PROFILE=strict)"; \
	EBB_TEST_HOST_PROFILE=strict $(CARGO) test --release --no-fail-fast -p ebb-tests --test filter || status=$$?; \
	exit $$status

## demo: drive the real filter through the harness host, ebb proxy and a live ebb gameday
demo: build
	./scripts/demo.sh

## bench: host and filter benchmarks, then ebb proxy against nginx with wrk (figures go to docs/benchmarks.md)
bench: build
	$(CARGO) bench -p ebb-host
	./scripts/bench-proxy.sh

## bench-proxy: only the ebb proxy / nginx comparison (needs Debian's nginx and wrk)
bench-proxy: build
	./scripts/bench-proxy.sh

## fuzz: cargo-fuzz targets for FUZZ_SECONDS each (default 60): the plugin configuration, control
## calls and signatures, scenarios. Installs a nightly toolchain and cargo-fuzz when missing.
FUZZ_SECONDS ?= 60
fuzz:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || $(CARGO) +1.95.0 install cargo-fuzz --locked
	cd fuzz && cargo +nightly fuzz run plugin_config -O -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && cargo +nightly fuzz run control_call -O -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && cargo +nightly fuzz run scenario -O --features scenario -- -max_total_time=$(FUZZ_SECONDS)

## lint: formatting and clippy with warnings as errors, native and wasm
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace $(NATIVE_EXCLUDES) --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) -p ebb-plugin $(foreach f,$(wildcard tests/filters/*),-p ebb-testfilter-$(notdir $(f))) -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf dist out
