import os
import subprocess
import sys

from frameseek import _native


def test_reports_a_supported_simd_level():
    supported = _native.supported_simd_levels()
    assert supported[0] == "scalar"
    assert set(supported) <= set(_native.compiled_simd_levels())
    assert _native.simd_level() == supported[-1] or "FRAMESEEK_SIMD" in os.environ


def test_env_var_forces_lower_path_and_rejects_unknown():
    code = "from frameseek import _native; print(_native.simd_level())"
    env = dict(os.environ, FRAMESEEK_SIMD="scalar")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "scalar", out.stderr
    env["FRAMESEEK_SIMD"] = "sse9"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown SIMD level" in bad.stderr


def test_type_stub_names_every_public_name():
    """server/frameseek/_native.pyi declares everything the compiled module exports."""
    import pathlib
    import re

    stub = (pathlib.Path(__file__).resolve().parents[1] / "server" / "frameseek" / "_native.pyi").read_text()
    declared = set(re.findall(r"^(?:class|def)\s+(\w+)", stub, re.M)) | set(re.findall(r"^(\w+)\s*:", stub, re.M))
    missing = {n for n in dir(_native) if not n.startswith("_")} - declared
    assert not missing, f"add to _native.pyi: {sorted(missing)}"
