"""Runs pytest with frameseek._native replaced by an ASan + UBSan build of the module, so the
Python native suite (tests/native) exercises the C++ core under the sanitizers. `make
sanitize-python-check` builds the module (build/asan-module) and runs this as

    ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD=$(clang -print-file-name=libclang_rt.asan-x86_64.so) \
        .venv/bin/python -X faulthandler=0 native/fuzz/asan_pytest.py MODULE.so -p no:faulthandler tests/native

LD_PRELOAD: CPython itself is not instrumented, so the ASan runtime must be loaded before
anything else. detect_leaks=0: CPython keeps interned objects alive at exit, which LeakSanitizer
would report. No faulthandler: its SIGSEGV handler would pre-empt ASan's report.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    module_path, *pytest_args = sys.argv[1:]
    # the editable install's import hook would load the release module: the package comes from
    # the source tree instead, with the sanitizer build registered as its _native first
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "ScikitBuildRedirectingFinder"]
    sys.path.insert(0, str(ROOT / "server"))
    spec = importlib.util.spec_from_file_location("frameseek._native", module_path)
    native = importlib.util.module_from_spec(spec)
    sys.modules["frameseek._native"] = native
    spec.loader.exec_module(native)
    import frameseek

    frameseek._native = native
    print(f"frameseek._native: {native.__file__}", file=sys.stderr)
    import pytest

    return pytest.main(pytest_args)


if __name__ == "__main__":
    sys.exit(main())
