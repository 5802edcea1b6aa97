# Sluice — two commands: `make run` and `make test`. Everything else is a helper they call.
SHELL := /bin/bash
SWIFT ?= swift
RELEASE_BIN := .build/release/sluice
# Release builds also end an object's lifetime at its last use, as Swift did before 5.7, instead of
# at the end of its scope: the optimizer may then borrow a constant stored reference instead of
# retaining it around each call. callgrind: about 17 fewer retain/release pairs per HTTP/1.1
# request, most in swift-nio's pipeline (`if let handler = self.inboundHandler { ... }`), 4 %
# fewer instructions (RESULTS.md, session 15). Code that must keep an object alive past its last
# use (a raw pointer taken from it) says so with `withExtendedLifetime`; see the SNI callback.
LIFETIME_FLAGS := -Xswiftc -Xfrontend -Xswiftc -enable-lexical-lifetimes=false
# Release builds leave out Swift's run-time exclusivity checks, in Sluice's code and swift-nio's:
# callgrind counted them at 15 % of the user-space instructions of a proxied request (see
# benchmarks/RESULTS.md, session 8). Debug builds keep them, so every test suite and the ASan and
# TSan runs still stop at an overlapping access.
RELEASE_FLAGS := -Xswiftc -enforce-exclusivity=unchecked $(LIFETIME_FLAGS)
# The shipped binary links the Swift runtime statically: calls into it (swift_retain and
# swift_release, about 300 per request) then skip the PLT. callgrind: 1-2 % fewer instructions
# per proxied request (RESULTS.md, session 15).
# Linked by lld: gold prints a warning from the static Foundation (its use of mktemp) on every
# build.
LINK_FLAGS := --static-swift-stdlib -Xswiftc -use-ld=lld
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# What the build, the demo and the tests need from apt.
APT_BUILD := libssl-dev libnghttp2-dev pkg-config openssl
APT_TEST := curl python3 wrk nghttp2-client python3-h2 chromium
APT_BENCH := wrk nginx-light haproxy nghttp2-client valgrind linux-perf
# The shared llhttp corpus: beside the checkout, or where this workplace keeps it.
LLHTTP_CORPUS ?= $(firstword $(wildcard $(abspath ../shared/corpora/llhttp) $(abspath ../../shared/corpora/llhttp) /work/shared/corpora/llhttp) $(abspath ../shared/corpora/llhttp))
HTTP ?= 127.0.0.1:8080
HTTPS ?= 127.0.0.1:8443

.PHONY: run test build deps test-deps bench-deps certs clean bench bench-hotpath bench-instructions bench-callgrind bench-perf test-extended fuzz test-sanitizers soak

# Installs whatever of the listed apt packages is missing (nothing when all are present).
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing with apt:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

deps:
	$(call apt_install,$(APT_BUILD))

test-deps: deps
	$(call apt_install,$(APT_TEST))

bench-deps: deps
	$(call apt_install,$(APT_BENCH))

build: deps
	$(SWIFT) build -c release --product sluice $(RELEASE_FLAGS) $(LINK_FLAGS)

# A development CA and certificates for the demo hosts (default, shop.local, *.apps.local), made once.
certs: deps
	@./scripts/dev-certs.sh certs

# Demo: three echo backends and the proxy serving ingress-rules/ on $(HTTP) and $(HTTPS).
run: build certs
	@./scripts/run-demo.sh $(RELEASE_BIN) $(HTTP) $(HTTPS)

# Every suite, then the unit tests under AddressSanitizer and ThreadSanitizer and 60 s of
# libFuzzer per target. `make test QUICK=1` stops after the suites.
test: test-deps build
	@if [ -d "$(LLHTTP_CORPUS)/request" ]; then echo "llhttp corpus: $(LLHTTP_CORPUS)"; \
	  else echo "llhttp corpus not found at $(LLHTTP_CORPUS): corpus tests SKIPPED"; fi
	$(SWIFT) build --build-tests
	SLUICE_BIN=$(abspath $(RELEASE_BIN)) SLUICE_LLHTTP_CORPUS=$(LLHTTP_CORPUS) $(SWIFT) test --skip-build
ifeq ($(QUICK),)
	@$(MAKE) --no-print-directory test-sanitizers
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=60
endif

# The unit tests (not the integration suite, which drives the release binary) under ASan and TSan.
test-sanitizers:
	$(SWIFT) build --build-tests --sanitize address --scratch-path .build-asan
	LSAN_OPTIONS=suppressions=$(abspath scripts/lsan.supp) SLUICE_LLHTTP_CORPUS=$(LLHTTP_CORPUS) $(SWIFT) test --skip-build --sanitize address --scratch-path .build-asan --skip IntegrationTests
	$(SWIFT) build --build-tests --sanitize thread --scratch-path .build-tsan
	SLUICE_LLHTTP_CORPUS=$(LLHTTP_CORPUS) $(SWIFT) test --skip-build --sanitize thread --scratch-path .build-tsan --skip IntegrationTests

# Slower checks outside `make test`: an sslscan of the TLS listener.
test-extended: deps build
	$(call apt_install,sslscan)
	@./scripts/tls-scan.sh

# libFuzzer on the HTTP/1 parser and the manifest loader, FUZZ_SECONDS each (default 60).
fuzz: deps
	@LLHTTP_CORPUS=$(LLHTTP_CORPUS) ./scripts/fuzz.sh

# Ten minutes of load with reloads every 3 s and a flapping backend; prints the RSS curve.
soak: test-deps build
	@./scripts/soak.sh

# The side-by-side matrix (about 45 minutes with the defaults), then reloads under load.
# `make bench-hotpath`: per-operation time, allocations and ARC traffic (ordo-one/benchmark).
bench: bench-deps build
	@./benchmarks/run.sh
	@python3 benchmarks/reload.py

bench-hotpath: deps
	$(SWIFT) package --package-path benchmarks/hotpath benchmark --no-progress

# Instructions per operation of the same hot-path cases under callgrind (repeatable to the
# instruction, unlike time here); ANNOTATE=1 adds the costliest functions.
bench-instructions: bench-deps
	@RELEASE_FLAGS="$(RELEASE_FLAGS)" ./benchmarks/hotpath/instructions.sh

# Instructions per proxied request in the whole proxy under callgrind (http, https, h2).
bench-callgrind: bench-deps build
	@./benchmarks/callgrind/run.sh

# User time per proxied request by function, sampled by perf under load (SCENARIO, WORKERS;
# BASE=other-binary compares two, alternated).
bench-perf: bench-deps build
	@./benchmarks/perf/profile.sh

clean:
	rm -rf .build .build-fuzz* .build-asan .build-tsan .fuzz .run
