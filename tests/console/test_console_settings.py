"""The console is off unless asked for; `serve --http-address` and `make run` ask for it."""

from __future__ import annotations

import asyncio
import pathlib
import subprocess
import sys

import pytest

from frameseek.api.auth import ConfigError
from frameseek.config import Settings
from frameseek.server import FrameSeekServer

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _server(tmp_path, **kw) -> FrameSeekServer:
    async def make() -> FrameSeekServer:  # grpc.aio binds the server to the running loop
        return FrameSeekServer(
            Settings(address="127.0.0.1:0", data_dir=str(tmp_path), metrics_address="", front_end="python", **kw)
        )

    return asyncio.run(make())


def test_off_by_default(tmp_path):
    assert Settings().http_address == ""
    srv = _server(tmp_path)
    assert srv.console is None and srv.service.ingest.ingest_frames is None


def test_on_with_an_http_address_hooks_ingest(tmp_path):
    srv = _server(tmp_path, http_address="127.0.0.1:0")
    assert srv.console is not None
    assert srv.service.ingest.ingest_frames == srv.console.media.ingest_frames
    assert (tmp_path / "console" / "incoming").is_dir()


def test_serve_takes_http_address_and_make_run_sets_it():
    out = subprocess.run(
        [sys.executable, "-m", "frameseek.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    ).stdout
    assert "--http-address" in out
    assert "serve --http-address 127.0.0.1:8080" in (ROOT / "Makefile").read_text()


def test_a_public_console_needs_insecure(tmp_path):
    with pytest.raises(ConfigError, match="--insecure"):
        _server(tmp_path, http_address="0.0.0.0:0")
    assert _server(tmp_path / "b", http_address="0.0.0.0:0", insecure=True).console is not None


def test_the_console_is_refused_beside_tokens(tmp_path):
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[[token]]\nname = "a"\nrole = "admin"\nsha256 = "' + "0" * 64 + '"\n')
    with pytest.raises(ConfigError, match="no login"):
        _server(tmp_path / "d", http_address="127.0.0.1:0", auth_tokens=str(tokens))
