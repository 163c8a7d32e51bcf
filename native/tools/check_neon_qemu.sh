#!/usr/bin/env bash
# Cross-compile the kernel self-check for aarch64 and run it under qemu-user: the only way to
# exercise the NEON kernels on an x86 machine. Needs (Debian): g++-aarch64-linux-gnu qemu-user.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
aarch64-linux-gnu-g++ -std=c++17 -O2 -Wall -Wextra -static -DFRAMESEEK_HAVE_NEON=1 -Inative/include \
  native/tools/kernel_selfcheck.cpp native/src/dispatch.cpp native/src/distance_scalar.cpp \
  native/src/distance_neon.cpp -o "$out/selfcheck"
qemu-aarch64 "$out/selfcheck"
