"""The grpcurl commands documented in clients/README.md, run verbatim against a live server.

The block between the `grpcurl-commands` markers is the documentation; this test extracts every
command from it, points it at a test server (address and collection substituted), runs it with
bash and checks what it prints. grpcurl comes from `make sdk-setup` (build/tools/bin)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from .helpers import ServerProcess, needs_index, seed_collection

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / "build" / "tools" / "bin"
DOC = ROOT / "clients" / "README.md"
DOC_ADDRESS = "127.0.0.1:50051"
DIM, VIDEOS, SAMPLES = 512, 6, 5

pytestmark = [
    needs_index,
    pytest.mark.skipif(
        not (TOOLS_BIN / "grpcurl").exists() and shutil.which("grpcurl") is None,
        reason="grpcurl is not installed (make sdk-setup puts it in build/tools/bin)",
    ),
]


def documented_commands() -> list[str]:
    text = DOC.read_text()
    m = re.search(r"<!-- grpcurl-commands:begin -->\s*```sh\n(.*?)```\s*<!-- grpcurl-commands:end -->", text, re.S)
    assert m, f"no grpcurl-commands block in {DOC}"
    cmds = [
        line
        for line in m.group(1).replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert cmds
    return cmds


def find(cmds: list[str], needle: str) -> str:
    hits = [c for c in cmds if needle in c]
    assert len(hits) == 1, f"{needle!r} in {len(hits)} documented commands"
    return hits[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server whose collection 'vecs' holds VIDEOS videos x SAMPLES random unit vectors."""
    data = tmp_path_factory.mktemp("grpcurl") / "data"
    index = {"m": 16, "ef_construction": 100, "ef_search": 64}
    vectors = seed_collection(data, dim=DIM, videos=VIDEOS, samples=SAMPLES, seed=11, index=index)
    srv = ServerProcess(data).start()
    yield srv, vectors
    assert srv.stop() == 0, srv.log()


def run(cmd: str, address: str) -> dict | str:
    cmd = cmd.replace(DOC_ADDRESS, address).replace("collections/default", "collections/vecs")
    env = {**os.environ, "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ['PATH']}"}
    p = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, f"{cmd}\n{p.stdout}\n{p.stderr}"
    try:
        return json.loads(p.stdout)
    except json.JSONDecodeError:
        return p.stdout


def test_every_documented_command_succeeds(server):
    srv, _ = server
    for cmd in documented_commands():
        run(cmd, srv.address)


def test_reflection_lists_services(server):
    srv, _ = server
    cmds = documented_commands()
    out = run(find(cmds, " list"), srv.address)
    assert {"frameseek.v1.FrameSeek", "grpc.health.v1.Health"} <= set(out.split())
    desc = run(find(cmds, " describe "), srv.address)
    assert "rpc SearchByVector" in desc and "rpc GetStats" in desc


def test_health_and_stats(server):
    srv, vectors = server
    cmds = documented_commands()
    assert run(find(cmds, "Health/Check"), srv.address) == {"status": "SERVING"}
    stats = run(find(cmds, "/GetStats"), srv.address)
    assert stats["version"] and stats["simd_level"]
    assert int(stats["sample_count"]) == VIDEOS * SAMPLES


def test_listings(server):
    srv, vectors = server
    cmds = documented_commands()
    cols = run(find(cmds, "/ListCollections"), srv.address)
    assert "collections/vecs" in [c["name"] for c in cols["collections"]]
    vids = run(find(cmds, "/ListVideos"), srv.address)
    assert sorted(v["name"] for v in vids["videos"]) == sorted(vectors)


def test_search_by_vector(server):
    srv, vectors = server
    cmd = find(documented_commands(), "/SearchByVector")
    res = run(cmd, srv.address)  # the documented constant vector: k=5 nearest videos, best first
    scores = [h["score"] for h in res["hits"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert {h["video"]["name"] for h in res["hits"]} <= set(vectors)
    # The same command with a stored sample as the query finds that video at that time, score 1.
    name, v = sorted(vectors.items())[2]
    exact = cmd.replace("[0.0441941738] * 512", json.dumps([float(x) for x in v[3]]))
    assert exact != cmd
    top = run(exact, srv.address)["hits"][0]
    assert top["video"]["name"] == name
    assert top["score"] == pytest.approx(1.0, abs=1e-4)
    assert top["matches"][0]["timestamp_seconds"] == pytest.approx(3.0)
