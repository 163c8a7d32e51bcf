"""The web console's end-to-end tests: a real `frameseek serve --http-address` process, real media
(opencv-doc's vtest.avi and ffmpeg re-encodes of it) and Debian's chromium driven by Playwright
(never `playwright install`: the browser is the system's)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import pytest

from tests.server.helpers import OPENCV_DATA, ServerProcess, grab_frame

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VTEST = OPENCV_DATA / "vtest.avi"
# FRAMESEEK_CONSOLE_SCREENSHOTS=docs/console writes the README's screenshots; else into tmp
SCREENSHOTS_ENV = "FRAMESEEK_CONSOLE_SCREENSHOTS"


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def start_with_console(server: ServerProcess) -> str:
    """Start `server` (settings with an http_address) and return its console's URL, read from this
    start's part of the server's JSON log (it binds port 0; the log of a reused data dir goes on)."""
    start = server.log_path.stat().st_size if server.log_path.exists() else 0
    server.start()  # ready: the console logged its URL before the gRPC port file was written
    for line in server.log()[start:].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "console" and rec.get("url"):
            return rec["url"].rstrip("/")
    raise RuntimeError(f"the console did not log its URL:\n{server.log()[start:]}")


needs_browser = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and VTEST.exists() and shutil.which("ffmpeg")),
    reason="needs Debian's chromium, opencv-doc and ffmpeg (make setup installs them)",
)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, pathlib.Path]:
    d = tmp_path_factory.mktemp("console-media")
    clip = d / "vtest-20s-copy.webm"  # a re-encoded, rescaled sub-clip the browser can also play
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-ss",
            "20",
            "-i",
            str(VTEST),
            "-t",
            "10",
            "-vf",
            "scale=iw*3/4:-2",
            "-c:v",
            "libvpx",
            "-b:v",
            "600k",
            "-an",
            str(clip),
        ],
        check=True,
    )
    return {
        "video": VTEST,
        "clip": clip,
        "frame": grab_frame(VTEST, 42.0, d / "frame-42s.png"),
        "photo": OPENCV_DATA / "HappyFish.jpg",
        "not_media": OPENCV_DATA / "alphabet_36.txt",
    }


@pytest.fixture(scope="module")
def console_server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("console") / "data", http_address="127.0.0.1:0")
    try:
        srv.url = start_with_console(srv)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_chromium(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    yield pg
    ctx.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> pathlib.Path:
    out = os.environ.get(SCREENSHOTS_ENV)
    path = pathlib.Path(out) if out else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path
