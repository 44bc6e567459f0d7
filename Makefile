# ebb: the entry points. `make demo` and `make test` are all a new machine needs.
SHELL := /bin/bash
CARGO ?= cargo
WASM_TARGET := wasm32-wasip1
WASM_OUT := target/$(WASM_TARGET)/wasm
EBB := target/release/ebb

# Test filters under tests/filters/ and the console are wasm-only crates; native commands leave them out.
NATIVE_EXCLUDES := --exclude ebb-plugin --exclude ebb-console $(foreach f,$(wildcard tests/filters/*),--exclude ebb-testfilter-$(notdir $(f)))

# The live console's browser code (harness/console): wasm-bindgen's CLI must be the exact version
# of the wasm-bindgen crate in Cargo.lock.
CONSOLE_TARGET := wasm32-unknown-unknown
CONSOLE_OUT := dist/console
WASM_BINDGEN_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/[^0-9.]/, ""); print}' Cargo.lock)

.PHONY: all wasm build test demo bench bench-proxy fuzz lint fmt clean prereqs wasm-target console console-tools test-console

all: build

## wasm-target: the wasm32-wasip1 target for the pinned toolchain, added when it is missing
wasm-target:
	@rustup target list --installed 2>/dev/null | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

## wasm: build the filter (the `wasm` profile: opt-level 2, fat LTO, stripped) and copy it to dist/ebb.wasm
wasm: wasm-target
	$(CARGO) build --target $(WASM_TARGET) --profile wasm -p ebb-plugin
	@mkdir -p dist
	cp $(WASM_OUT)/ebb_plugin.wasm dist/ebb.wasm
	@echo "dist/ebb.wasm: $$(stat -c %s dist/ebb.wasm) bytes"

## console-tools: the wasm32-unknown-unknown target and wasm-bindgen's CLI at Cargo.lock's version, when
## missing (not --locked: the CLI's own lock file pins a dependency release that has since been yanked)
console-tools:
	@rustup target list --installed 2>/dev/null | grep -qx '$(CONSOLE_TARGET)' || rustup target add $(CONSOLE_TARGET)
	@[ "$$(wasm-bindgen --version 2>/dev/null)" = "wasm-bindgen $(WASM_BINDGEN_VERSION)" ] || \
	  $(CARGO) install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION)

## console: the live console's page (ebb gameday --console) in dist/console: the browser code
## built for wasm32-unknown-unknown, wasm-bindgen's glue for it, index.html, boot.js, style.css
console: console-tools
	@# The filter's profile (at its opt-level 2 the console is 290 KB, at "s" 300 KB), but wasm-bindgen reads custom sections that a full strip removes.
	$(CARGO) build --target $(CONSOLE_TARGET) --profile wasm --config 'profile.wasm.strip="debuginfo"' -p ebb-console
	@rm -rf $(CONSOLE_OUT) && mkdir -p $(CONSOLE_OUT)
	wasm-bindgen --target web --no-typescript --out-dir $(CONSOLE_OUT) target/$(CONSOLE_TARGET)/wasm/ebb_console.wasm
	cp harness/console/static/index.html harness/console/static/boot.js harness/console/static/style.css $(CONSOLE_OUT)/
	@echo "$(CONSOLE_OUT): $$(stat -c %s $(CONSOLE_OUT)/ebb_console_bg.wasm) bytes of wasm"

## test-console: the browser code's unit tests (wasm-bindgen-test) in headless Chromium
test-console: console-tools
	@profile=$$(mktemp -d); trap 'rm -rf "$$profile"' EXIT; \
	printf '{"goog:chromeOptions":{"binary":"%s","args":["--headless","--no-sandbox","--disable-gpu","--disable-quic","--no-first-run","--disable-background-networking","--disable-component-update","--disable-sync","--user-data-dir=%s"]}}' \
	  "$$(command -v chromium)" "$$profile/chromium" > "$$profile/webdriver.json"; \
	CHROMEDRIVER=$$(command -v chromedriver) WASM_BINDGEN_TEST_WEBDRIVER_JSON="$$profile/webdriver.json" \
	WASM_BINDGEN_TEST_TIMEOUT=60 CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
	$(CARGO) test --release --target $(CONSOLE_TARGET) -p ebb-console

## build: the filter and the ebb command (release)
build: wasm
	$(CARGO) build --release -p ebb-harness

## prereqs: what the tests run besides cargo (checked first, so a missing tool is named at once)
prereqs:
	@missing=""; for t in promtool prometheus prometheus-alertmanager chromium chromedriver; do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make test needs:$$missing. Install Debian's 'prometheus', 'prometheus-alertmanager', 'chromium' and" >&2; \
	  echo "'chromium-driver' packages (tests/gameday runs Prometheus and Alertmanager, tests/console a real browser)," >&2; \
	  echo "or run .ci/run, which installs everything the tests need." >&2; exit 2; fi

## test: every test, against a freshly built dist/ebb.wasm. The release profile, as `make build`
## uses: wasmtime is compiled once for both. Every test binary runs even when one fails. The real
## filter's end-to-end tests run a second time with the host playing `strict` (Envoy's and Kong's
## ngx_wasm_module's refusals at once), so a change that works only in Envoy fails here.
test: prereqs wasm console
	@status=0; \
	$(CARGO) test --release --no-fail-fast --workspace $(NATIVE_EXCLUDES) || status=$$?; \
	echo "== the console's browser code in headless Chromium (make test-console)"; \
	$(MAKE) --no-print-directory test-console || status=$$?; \
	echo "== tests/filter again, the host playing strict (EBB_TEST_HOST_PROFILE=strict)"; \
	EBB_TEST_HOST_PROFILE=strict $(CARGO) test --release --no-fail-fast -p ebb-tests --test filter || status=$$?; \
	exit $$status

## demo: drive the real filter through the harness host, ebb proxy and a live ebb gameday
demo: build console
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
	$(CARGO) clippy --target $(CONSOLE_TARGET) -p ebb-console --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf dist out
