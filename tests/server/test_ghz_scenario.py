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

needs_tools = pytest.mark.skipif(
    not all(t.exists() for t in TOOLS), reason="ghz/buf are not installed (make sdk-setup)"
)


def test_ghz_report_counts_calls_cut_at_the_deadline_apart_from_server_errors():
    """At the -z deadline ghz cuts the calls in flight, with any of three client-side messages
    (CI once saw a Canceled that the parser did not know); a server's error must still count."""
    summarize = runpy.run_path(str(SCRIPT))["summarize_report"]
    cut_msgs = {
        "rpc error: code = Unavailable desc = error reading from server: read tcp: use of closed network connection": 2,
        "rpc error: code = Canceled desc = context canceled": 1,
        "rpc error: code = Canceled desc = grpc: the client connection is closing": 1,
    }
    report = {
        "total": 2e9,
        "statusCodeDistribution": {"OK": 100, "Unavailable": 2, "Canceled": 2},
        "errorDistribution": cut_msgs,
        "latencyDistribution": [{"percentage": p, "latency": p * 1e4} for p in (50, 95, 99)],
    }
    r = summarize(report)
    assert (r["requests"], r["qps"], r["errors"], r["cut_at_deadline"]) == (100, 50.0, {}, 4)
    assert (r["p50_ms"], r["p99_ms"]) == (0.5, 0.99)
    server_err = "rpc error: code = InvalidArgument desc = vector has 3 values; the collection's dimension is 512"
    report["statusCodeDistribution"]["InvalidArgument"] = 1
    report["errorDistribution"] = {**cut_msgs, server_err: 1}
    r = summarize(report)
    assert r["errors"] == {"InvalidArgument": 1} and r["error_messages"] == {server_err: 1}


@needs_media
@needs_tools
def test_ghz_scenario_runs_both_drivers(tmp_path, monkeypatch, capsys):
    out = tmp_path / "ghz.json"
    # cells of 2 s: one SearchByImage (decode + embed) can take ~0.6 s on a loaded 2-core machine,
    # and a cell that ends before its first reply has no latency to check
    monkeypatch.setattr(
        sys,
        "argv",
        [
            str(SCRIPT),
            "--n",
            "3000",
            "--per-video",
            "50",
            "--duration",
            "2",
            "--concurrency",
            "1,4",
            "--data-dir",
            str(tmp_path / "data"),
            "--out",
            str(out),
        ],
    )
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
            assert cell["errors"] == {}, (r["rpc"], r["concurrency"], who, cell["errors"], cell.get("error_messages"))
            assert 0 < cell["p50_ms"] <= cell["p95_ms"] <= cell["p99_ms"]
    table = capsys.readouterr().out
    assert "ghz qps" in table and "python qps" in table
