"""The gRPC API through a real server process on a free loopback port, over a collection filled
with known vectors through the storage layer (no model needed): search by vector, filters,
pagination, collections, delete, restart, health/reflection, and the error contract."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import numpy as np
import pytest

from frameseek.client import FrameSeekError
from frameseek.v1 import frameseek_pb2 as pb

from .helpers import ServerProcess, needs_index, seed_collection

pytestmark = needs_index
DIM, VIDEOS, SAMPLES = 64, 40, 20


@pytest.fixture(scope="module", params=["native", "python"])
def world(request, tmp_path_factory):
    """A data dir with collection 'vecs': VIDEOS videos x SAMPLES unit vectors, sample i at 0.5*i s,
    served by each front end in turn (the native C++ one, the default, and grpc.aio alone)."""
    data = tmp_path_factory.mktemp("srv") / "data"
    index = {"m": 16, "ef_construction": 200, "ef_search": 128}
    vectors = seed_collection(
        data,
        dim=DIM,
        videos=VIDEOS,
        samples=SAMPLES,
        seed=7,
        spacing=0.5,
        index=index,
        labels=lambda i: {"parity": str(i % 2)},
    )
    srv = ServerProcess(data, front_end=request.param).start()
    yield srv, vectors
    assert srv.stop() == 0, srv.log()


@pytest.fixture
def fs(world):
    with world[0].client() as c:
        yield c


def _code(exc_info) -> tuple[grpc.StatusCode, str]:
    return exc_info.value.code, exc_info.value.reason


def test_search_by_vector_finds_video_and_timestamp(world, fs):
    _, vectors = world
    rng = np.random.default_rng(0)
    for name in list(vectors)[:10]:
        j = int(rng.integers(SAMPLES))
        q = vectors[name][j] + 0.05 * rng.standard_normal(DIM).astype(np.float32)
        r = fs.search_by_vector(q, collection="vecs", k=3)
        assert r.hits[0].video.name == name
        assert r.hits[0].matches[0].timestamp_seconds == pytest.approx(0.5 * j)
        assert r.hits[0].score > 0.9 and r.hits[0].score >= r.hits[1].score
        assert len(r.hits) == 3 and len({h.video.name for h in r.hits}) == 3


def test_search_options_and_filters(world, fs):
    _, vectors = world
    names = list(vectors)
    q = vectors[names[4]][3]
    # a query halfway between two samples of one video: both timestamps come back, best first
    q2 = vectors[names[4]][3] + vectors[names[4]][11] * 0.9
    r = fs.search_by_vector(q2, collection="vecs", k=2, max_matches_per_video=5)
    assert r.hits[0].video.name == names[4] and len(r.hits[0].matches) >= 2
    assert [m.timestamp_seconds for m in r.hits[0].matches[:2]] == [1.5, 5.5]
    assert [m.score for m in r.hits[0].matches] == sorted([m.score for m in r.hits[0].matches], reverse=True)
    # label filter: video 4 has parity 0, so with parity=1 it cannot appear
    r = fs.search_by_vector(q, collection="vecs", k=5, labels={"parity": "1"})
    assert r.hits and all(h.video.labels["parity"] == "1" for h in r.hits)
    r = fs.search_by_vector(q, collection="vecs", k=5, videos=[names[7], names[9]])
    assert {h.video.name for h in r.hits} == {names[7], names[9]}
    r = fs.search_by_vector(q, collection="vecs", k=5, exclude_videos=[names[4]])
    assert names[4] not in {h.video.name for h in r.hits} and len(r.hits) == 5
    r = fs.search_by_vector(q, collection="vecs", k=5, min_score=0.99)
    assert [h.video.name for h in r.hits] == [names[4]]


def test_list_get_and_pagination(world, fs):
    _, vectors = world
    seen = [v.name for v in fs.list_videos("vecs", page_size=7)]
    assert len(seen) == VIDEOS and set(seen) == set(vectors)
    ids = [int(n.rsplit("/", 1)[1]) for n in seen]
    assert ids == sorted(ids, reverse=True)
    resp = fs.stub.ListVideos(pb.ListVideosRequest(parent="collections/vecs", page_size=7))
    assert resp.total_size == VIDEOS and resp.next_page_token
    odd = list(fs.list_videos("vecs", labels={"parity": "1"}))
    assert len(odd) == VIDEOS // 2
    v = fs.get_video(seen[0])
    assert v.sample_count == SAMPLES and v.duration_seconds == SAMPLES * 0.5
    assert fs.find_by_hash(v.content_sha256, "vecs").name == v.name
    assert fs.find_by_hash("0" * 63 + "f", "default") is None
    assert [c.name for c in fs.list_collections(page_size=1)] == ["collections/default", "collections/vecs"]
    c = fs.get_collection("vecs")
    assert (c.dimension, c.video_count, c.sample_count) == (DIM, VIDEOS, VIDEOS * SAMPLES)
    assert fs.get_collection("default").is_default


@pytest.mark.parametrize(
    "call, code, reason",
    [
        (lambda fs: fs.search_by_vector(np.ones(DIM + 1), collection="vecs"), "INVALID_ARGUMENT", "DIMENSION_MISMATCH"),
        (
            lambda fs: fs.search_by_vector([float("nan")] * DIM, collection="vecs"),
            "INVALID_ARGUMENT",
            "NON_FINITE_VECTOR",
        ),
        (
            lambda fs: fs.search_by_vector([float("inf")] + [0.0] * (DIM - 1), collection="vecs"),
            "INVALID_ARGUMENT",
            "NON_FINITE_VECTOR",
        ),
        (lambda fs: fs.search_by_vector(np.ones(DIM), collection="nope"), "NOT_FOUND", "COLLECTION_NOT_FOUND"),
        (
            lambda fs: fs.search_by_vector(np.ones(DIM), collection="vecs", k=5000),
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
        ),
        (
            lambda fs: fs.search_by_vector(np.ones(DIM), collection="collections/a/b"),
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
        ),
        (lambda fs: fs.get_video("collections/vecs/videos/999999"), "NOT_FOUND", "VIDEO_NOT_FOUND"),
        (lambda fs: fs.get_video("videos/1"), "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
        (lambda fs: fs.get_job("ingestJobs/nope"), "NOT_FOUND", "JOB_NOT_FOUND"),
        (
            lambda fs: list(fs.list_videos("vecs", content_sha256="x", page_size=-1)),
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
        ),
        (
            lambda fs: fs._call(
                fs.stub.ListVideos, pb.ListVideosRequest(parent="collections/vecs", page_token="garbage!")
            ),
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
        ),
        (lambda fs: fs.ingest_video(b"", collection="vecs"), "INVALID_ARGUMENT", "EMPTY_MEDIA"),
        (lambda fs: fs.ingest_video(b"x", collection="nope"), "NOT_FOUND", "COLLECTION_NOT_FOUND"),
        (lambda fs: fs.ingest_video(b"x", labels={"BAD KEY": "v"}), "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
        (lambda fs: fs.ingest_video(server_path="/etc/passwd"), "PERMISSION_DENIED", "PATH_NOT_ALLOWED"),
        (lambda fs: fs.create_collection("Bad_Id"), "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
        (lambda fs: fs.create_collection("vecs"), "ALREADY_EXISTS", "COLLECTION_EXISTS"),
        (lambda fs: fs.delete_collection("default"), "FAILED_PRECONDITION", "DEFAULT_COLLECTION"),
        (lambda fs: fs.delete_collection("vecs"), "FAILED_PRECONDITION", "COLLECTION_NOT_EMPTY"),
    ],
    ids=[
        "dim",
        "nan",
        "inf",
        "unknown-collection",
        "k",
        "bad-parent",
        "no-video",
        "bad-video-name",
        "no-job",
        "page-size",
        "page-token",
        "zero-bytes",
        "ingest-unknown-collection",
        "label",
        "server-path",
        "coll-id",
        "coll-exists",
        "delete-default",
        "delete-nonempty",
    ],
)
def test_errors_have_code_reason_and_message_and_server_keeps_serving(fs, call, code, reason):
    with pytest.raises(FrameSeekError) as ei:
        call(fs)
    assert _code(ei) == (getattr(grpc.StatusCode, code), reason)
    assert len(ei.value.message) > 10
    assert fs.stats().video_count >= VIDEOS  # still serving


def _stream_error(fs, messages) -> FrameSeekError:
    with pytest.raises(grpc.RpcError) as ei:
        fs.stub.IngestVideo(iter(messages), timeout=30)
    return FrameSeekError.from_rpc(ei.value)


def test_stream_protocol_errors(fs):
    e = _stream_error(fs, [pb.IngestVideoRequest(chunk=b"abc")])
    assert (e.code, e.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MISSING_METADATA")
    e = _stream_error(fs, [])
    assert (e.code, e.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MISSING_METADATA")
    meta = pb.IngestMetadata(parent="collections/vecs")
    e = _stream_error(fs, [pb.IngestVideoRequest(metadata=meta), pb.IngestVideoRequest(chunk=b"x" * ((1 << 20) + 1))])
    assert (e.code, e.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CHUNK_TOO_LARGE")
    e = _stream_error(fs, [pb.IngestVideoRequest(metadata=meta), pb.IngestVideoRequest(metadata=meta)])
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT and "first message" in e.message
    e = _stream_error(fs, [pb.IngestVideoRequest(metadata=pb.IngestMetadata(size_bytes=1 << 50))])
    assert (e.code, e.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "MEDIA_TOO_LARGE")
    # a message over the server's receive limit (16 MiB) is refused by gRPC itself
    with pytest.raises(grpc.RpcError) as ei:
        fs.stub.SearchByImage(pb.SearchByImageRequest(image=b"\0" * (17 << 20)), timeout=30)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert fs.stats().video_count >= VIDEOS


def test_collections_crud(fs):
    c = fs.create_collection("tmp-coll", fps=2.0, description="scratch")
    assert c.name == "collections/tmp-coll" and c.sampling.fps == 2.0 and c.metric == pb.METRIC_COSINE
    assert fs.get_collection("tmp-coll").description == "scratch"
    fs.delete_collection("tmp-coll")
    with pytest.raises(FrameSeekError) as ei:
        fs.get_collection("tmp-coll")
    assert ei.value.code == grpc.StatusCode.NOT_FOUND


def test_health_and_reflection(world):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(world[0].address) as ch:
        h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="frameseek.v1.FrameSeek"))
        assert h.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in resp.list_services_response.service}
        assert {"frameseek.v1.FrameSeek", "grpc.health.v1.Health"} <= names


def test_sigusr1_dumps_thread_stacks_and_keeps_serving(world, fs):
    """The operator's view of a stuck server (and what conftest attaches to a failed test)."""
    srv, _ = world
    dump = srv.dump_stacks()
    headers = [ln for ln in dump.splitlines() if ln.startswith(("Thread 0x", "Current thread 0x"))]
    assert len(headers) >= 2, dump  # every thread: the event loop's and the pools' at least
    assert "frameseek/cli/serve.py" in dump, dump  # the main thread's frames, down to `frameseek serve`
    assert srv.proc.poll() is None and fs.stats().video_count == VIDEOS


def test_cli_against_server(world):
    srv, _ = world

    def run(*a):
        return subprocess.run(
            [sys.executable, "-m", "frameseek.cli", *a, "--server", srv.address],
            capture_output=True,
            text=True,
            timeout=120,
        )

    r = run("stats", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert int(s["video_count"]) >= VIDEOS
    r = run("videos", "-c", "vecs", "--json", "--limit", "3")
    assert r.returncode == 0 and len(json.loads(r.stdout)["videos"]) == 3
    r = run("videos", "-c", "vecs")
    assert r.returncode == 0 and "collections/vecs/videos/" in r.stdout
    r = run("delete", "collections/vecs/videos/999999", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["reason"] == "VIDEO_NOT_FOUND"


def test_delete_is_immediate_and_restart_keeps_everything(tmp_path, world):
    """Runs last in this module: deletes a video, restarts the server (graceful and kill -9)."""
    srv, vectors = world
    names = list(vectors)
    victim = names[-1]
    with srv.client() as fs:
        fs.delete_video(victim)
        r = fs.search_by_vector(vectors[victim][0], collection="vecs", k=VIDEOS)
        assert victim not in {h.video.name for h in r.hits} and len(r.hits) == VIDEOS - 1
        with pytest.raises(FrameSeekError):
            fs.get_video(victim)
    for how in ("graceful", "kill9"):
        if how == "graceful":
            assert srv.stop() == 0
        else:
            srv.kill9()
        srv.start()
        with srv.client() as fs:
            r = fs.search_by_vector(vectors[victim][0], collection="vecs", k=VIDEOS)
            assert victim not in {h.video.name for h in r.hits}
            for name in names[:-1]:
                assert fs.search_by_vector(vectors[name][5], collection="vecs", k=1).hits[0].video.name == name
            assert fs.get_collection("vecs").video_count == VIDEOS - 1
