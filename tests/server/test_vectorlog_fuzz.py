"""A bounded run of the vector-log fuzz target (native/fuzz/fuzz_vectorlog.py, atheris) over damaged
log segments (format v2 with sync-marked records, and v1): replay raises nothing but LogCorrupt,
skips mid-log damage and reports it inside the segment, never yields a record whose framing, CRC,
video id, content digest or vectors differ from its bytes, and an append after the replay survives
the next replay. Fixed seed and run count, so the run is the same every time; `make fuzz` runs it
for longer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "native" / "fuzz" / "fuzz_vectorlog.py"
CORPUS = ROOT / "native" / "fuzz" / "corpus" / "fuzz_vectorlog"
RUNS = 20000


def test_vector_log_replay_survives_fuzzing(tmp_path):
    scratch = tmp_path / "corpus"
    scratch.mkdir()
    run = subprocess.run(
        [
            sys.executable,
            str(TARGET),
            f"-runs={RUNS}",
            "-seed=1",
            "-max_len=4096",
            # the interpreter with numpy and atheris' instrumentation of every module it loads sits
            # near 3 GB from the first run on (constant, not growing); libFuzzer's default limit is 2 GB
            "-rss_limit_mb=8192",
            f"-artifact_prefix={tmp_path}/",
            str(scratch),
            str(CORPUS),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert f"Done {RUNS} runs" in run.stderr, run.stderr[-2000:]
