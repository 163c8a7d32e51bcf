"""The ghz load scenario (benchmarks/load/ghz/run.py) end to end on a tiny index, so the script,
its protoset and binary request files, and the ghz report parsing keep working. Speed itself is
measured by the script, not asserted here."""
from __future__ import annotations

import json
import pathlib
import runpy
import sys

import pytest

from .helpers import needs_media

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "load" / "ghz" / "run.py"
TOOLS = [ROOT / "build" / "tools" / "bin" / "ghz", ROOT / "clients" / "typescript" / "node_modules" / ".bin" / "buf"]

pytestmark = [needs_media, pytest.mark.skipif(not all(t.exists() for t in TOOLS),
                                              reason="ghz/buf are not installed (make sdk-setup)")]


def test_ghz_scenario_runs_both_drivers(tmp_path, monkeypatch, capsys):
    out = tmp_path / "ghz.json"
    # cells of 2 s: one SearchByImage (decode + embed) can take ~0.6 s on a loaded 2-core machine,
    # and a cell that ends before its first reply has no latency to check
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--n", "3000", "--per-video", "50", "--duration", "2",
                                      "--concurrency", "1,4", "--data-dir", str(tmp_path / "data"),
                                      "--out", str(out)])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exc.value.code == 0
    res = json.loads(out.read_text())
    assert res["n_vectors"] == 3000
    cells = {(r["rpc"], r["concurrency"]) for r in res["rows"]}
    assert cells == {("vector", 1), ("vector", 4), ("image", 1), ("image", 4)}
    for r in res["rows"]:
        for who in ("ghz", "python"):
            cell = r[who]
            assert cell["requests"] > 0 and cell["qps"] > 0, (r["rpc"], r["concurrency"], who, cell)
            assert cell["errors"] == {}, (r["rpc"], r["concurrency"], who, cell)
            assert 0 < cell["p50_ms"] <= cell["p95_ms"] <= cell["p99_ms"]
    table = capsys.readouterr().out
    assert "ghz qps" in table and "python qps" in table
