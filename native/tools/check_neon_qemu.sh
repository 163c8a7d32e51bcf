#!/usr/bin/env bash
# Cross-compile the kernel self-check for aarch64 and run it under qemu-user: the only way to
# exercise the NEON kernels (distances and popcounts) on an x86 machine. Needs (Debian):
# g++-aarch64-linux-gnu qemu-user (make neon-check installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
src=native/src
aarch64-linux-gnu-g++ -std=c++17 -O2 -Wall -Wextra -static -DFRAMESEEK_HAVE_NEON=1 -Inative/include \
  native/tools/kernel_selfcheck.cpp $src/dispatch.cpp $src/distance_scalar.cpp $src/distance_neon.cpp \
  $src/fingerprint/dispatch.cpp $src/fingerprint/popcount_scalar.cpp $src/fingerprint/popcount_neon.cpp \
  -o "$out/selfcheck"
qemu-aarch64 "$out/selfcheck"
