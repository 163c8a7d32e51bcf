"""The console is off unless asked for; `serve --http-address` and `make run` ask for it."""
from __future__ import annotations

import pathlib
import subprocess
import sys

from frameseek.config import Settings
from frameseek.server import FrameSeekServer

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _server(tmp_path, **kw) -> FrameSeekServer:
    return FrameSeekServer(Settings(address="127.0.0.1:0", data_dir=str(tmp_path), metrics_address="",
                                    front_end="python", **kw))


def test_off_by_default(tmp_path):
    assert Settings().http_address == ""
    srv = _server(tmp_path)
    assert srv.console is None and srv.service.ingest_frames is None


def test_on_with_an_http_address_hooks_ingest(tmp_path):
    srv = _server(tmp_path, http_address="127.0.0.1:0")
    assert srv.console is not None
    assert srv.service.ingest_frames == srv.console.media.ingest_frames
    assert (tmp_path / "console" / "incoming").is_dir()


def test_serve_takes_http_address_and_make_run_sets_it():
    out = subprocess.run([sys.executable, "-m", "frameseek.cli", "serve", "--help"], capture_output=True,
                         text=True, check=True, cwd=ROOT, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}).stdout
    assert "--http-address" in out
    assert "serve --http-address 127.0.0.1:8080" in (ROOT / "Makefile").read_text()
