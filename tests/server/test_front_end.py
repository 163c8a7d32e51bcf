"""The one vector search (native/src/search_directory.cpp) and the native gRPC front end around it
(front_end.py, native/src/front_end/).

The search must find what an exact search finds (the k best videos, each with its best frame's
score, matches that are real frames of it, filters applied), whether the front end answers the
request bytes or the Python service calls it; the front end must decline what the service must
decide (label filters, errors), follow commits at once (add, delete, collections), and pass every
other call through with its status details. The rest of tests/server runs through it too (it is the
default), and test_server_api.py runs its suite against both front ends.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frameseek import _native, front_end
from frameseek.api.messages import video_ids
from frameseek.api.names import parse_collection
from frameseek.config import Settings
from frameseek.server import create_server
from frameseek.service import SearchOptions
from frameseek.storage import VideoRecord
from frameseek.v1 import frameseek_pb2 as pb
from frameseek.v1 import frameseek_pb2_grpc as pb_grpc

from .helpers import needs_index

pytestmark = [needs_index, pytest.mark.skipif(not front_end.available(), reason="native module built without gRPC C++")]
DIM, VIDEOS, SAMPLES = 32, 40, 16


def _video(cid: int, i: int) -> VideoRecord:
    return VideoRecord(
        id=0,
        collection_id=cid,
        kind="video",
        duration=SAMPLES * 0.5,
        width=64,
        height=48,
        sample_count=SAMPLES,
        size_bytes=100 + i,
        content_sha256=f"{i:064x}",
        external_key=f"v{i}",
    )


class World:
    """A server in this process (so the test can reach its service and directory) on a free port,
    with collections 'ip' (cosine) and 'l2' of random videos; some videos repeat a vector of
    another so that one query matches several videos and several frames per video."""

    def __init__(self, tmp_path):
        # the event loop runs in its own thread, as in `frameseek serve`: the blocking stub calls
        # below go through the front end to the grpc.aio service on this loop
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.srv, self.port = self.run(
            create_server(
                Settings(address="127.0.0.1:0", data_dir=str(tmp_path), metrics_address="", front_end="native")
            )
        )
        self.run(self.srv.wait_ready())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.FrameSeekStub(self.channel)
        rng = np.random.default_rng(3)
        self.vectors: dict[str, np.ndarray] = {}
        self.times: dict[str, np.ndarray] = {}
        self.twins: dict[str, np.ndarray] = {}  # coarse twins (Storage.add_video): every third video
        svc = self.srv.service
        for metric in ("ip", "l2"):
            rec = svc.storage.create_collection(
                metric,
                model="m-" + metric,
                dimension=DIM,
                metric=metric,
                sampling={"fps": 2.0},
                index={"m": 8, "ef_construction": 64},
            )
            shared = rng.standard_normal((4, DIM)).astype(np.float32)
            for i in range(VIDEOS):
                v = rng.standard_normal((SAMPLES, DIM)).astype(np.float32)
                v[i % 3] = shared[i % 4] + 0.05 * v[i % 3]  # near-copies across videos
                v[SAMPLES - 1] = v[0] * 1.01  # two frames of one video match one query
                if metric == "ip":
                    v /= np.linalg.norm(v, axis=1, keepdims=True)
                ts = np.arange(SAMPLES) * 0.5 + 0.25 * (i % 2)
                tw = None
                if i % 3 == 0:
                    tw = v + 0.3 * rng.standard_normal((SAMPLES, DIM)).astype(np.float32)
                    if metric == "ip":
                        tw /= np.linalg.norm(tw, axis=1, keepdims=True)
                r = svc.storage.add_video(rec.id, _video(rec.id, i), ts, v, twins=tw)
                self.vectors[f"collections/{metric}/videos/{r.id}"] = v
                self.times[f"collections/{metric}/videos/{r.id}"] = ts
                if tw is not None:
                    self.twins[f"collections/{metric}/videos/{r.id}"] = tw

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def python_answer(self, req: pb.SearchByVectorRequest) -> pb.SearchResponse:
        """What the Python service answers for the same request (the path the front end forwards to)."""
        o = req.options
        opts = SearchOptions(
            k=o.k,
            min_score=o.min_score,
            max_matches_per_video=o.max_matches_per_video,
            ef=o.ef,
            labels=dict(o.filter.labels),
            videos=video_ids(o.filter.videos),
            exclude_videos=video_ids(o.filter.exclude_videos),
        )
        hits, model = self.run(self.srv.service.search.by_vector(parse_collection(req.parent), list(req.vector), opts))
        return pb.SearchResponse.FromString(self.srv.servicer.tr.hits_bytes(hits, model))

    def stats(self) -> dict:
        return self.srv.front.stats()

    def close(self):
        self.channel.close()
        self.run(self.srv.stop(1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("front"))
    yield w
    w.close()


def _same(a: pb.SearchResponse, b: pb.SearchResponse) -> None:
    assert a.model == b.model
    assert [h.video for h in a.hits] == [h.video for h in b.hits]
    for ha, hb in zip(a.hits, b.hits):
        assert ha.score == pytest.approx(hb.score, abs=2e-6)
        assert [m.timestamp_seconds for m in ha.matches] == [m.timestamp_seconds for m in hb.matches]
        assert [m.score for m in ha.matches] == pytest.approx([m.score for m in hb.matches], abs=2e-6)


def exact_hits(
    world, metric: str, q: np.ndarray, min_score: float, videos: list[str], exclude: list[str]
) -> list[tuple[str, float, dict[float, float]]]:
    """The reference: float64 brute force over every vector of every eligible video (a coarse
    twin is one more vector of its sample) -> the videos by their best frame, best first,
    as (name, best score, {timestamp: the sample's best score} of the frames passing min_score)."""
    qq = q.astype(np.float64)
    if metric == "ip":
        qq = qq / np.linalg.norm(qq)
    out = []
    for name in (n for n in world.vectors if n.startswith(f"collections/{metric}/")):
        if (videos and name not in videos) or name in exclude:
            continue
        per_sample = []
        for vecs in (world.vectors[name], world.twins.get(name)):
            if vecs is None:
                continue
            v = vecs.astype(np.float64)
            per_sample.append(v @ qq if metric == "ip" else 1.0 - ((v - qq) ** 2).sum(axis=1) / 2.0)
        best = np.max(per_sample, axis=0)
        frames = {float(t): float(s) for t, s in zip(world.times[name], best) if s >= min_score}
        if frames:
            out.append((name, max(frames.values()), frames))
    out.sort(key=lambda h: -h[1])
    return out


def _check_against_exact(got: pb.SearchResponse, eligible, k: int, m: int, model: str) -> None:
    """`eligible`: exact_hits' every video, best first; the k best of them are wanted."""
    assert got.model == model
    want = eligible[:k]
    # the k best videos: the same best scores in the same order (a near-tie may swap two names)
    assert [h.score for h in got.hits] == pytest.approx([w[1] for w in want], abs=2e-5)
    frames = {w[0]: w for w in eligible}
    for h in got.hits:
        assert h.video.name in frames, "a video the filters exclude or without a frame above min_score"
        name, best, real = frames[h.video.name]
        assert h.score == pytest.approx(best, abs=2e-5)
        stamps = [x.timestamp_seconds for x in h.matches]
        assert 1 <= len(stamps) <= m and len(set(stamps)) == len(stamps)
        assert h.matches[0].score == pytest.approx(h.score, abs=1e-6)
        scores = [x.score for x in h.matches]
        assert scores == sorted(scores, reverse=True)
        for x in h.matches:  # each match is a real frame of the video, with that frame's score
            assert x.score == pytest.approx(real[x.timestamp_seconds], abs=2e-5)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    metric=st.sampled_from(["ip", "l2"]),
    k=st.integers(0, 25),
    m=st.integers(0, 4),
    min_score=st.sampled_from([0.0, -1.0, 0.3, 0.7, 0.98]),
    noise=st.sampled_from([0.0, 0.05, 0.5]),
    scale=st.sampled_from([1.0, 3.0]),
)
def test_the_search_finds_the_exact_best_videos_with_filters(world, data, metric, k, m, min_score, noise, scale):
    """At ef = MAX_EF (every vector of these small indexes is visited) the search is exact: the
    front end's answer and the Python service's (the same search, two callers) both equal the
    brute-force reference, with video filters, exclusions, min_score and several matches per video."""
    names = sorted(n for n in world.vectors if n.startswith(f"collections/{metric}/"))
    name = data.draw(st.sampled_from(names))
    row = data.draw(st.integers(0, SAMPLES - 1))
    src = world.twins if name in world.twins and data.draw(st.booleans()) else world.vectors  # a twin: sample row
    q = (src[name][row] + noise * np.random.default_rng(row).standard_normal(DIM).astype(np.float32)) * scale
    # video filters: names of this collection, of the other one, and of no video at all
    other = "ip" if metric == "l2" else "l2"
    pool = names + [n.replace(f"/{metric}/", f"/{other}/") for n in names[:3]] + [f"collections/{metric}/videos/99999"]
    videos = data.draw(st.one_of(st.just([]), st.lists(st.sampled_from(pool), max_size=12)))
    exclude = data.draw(st.one_of(st.just([]), st.lists(st.sampled_from(pool), max_size=4)))
    req = pb.SearchByVectorRequest(
        parent=f"collections/{metric}",
        vector=q.tolist(),
        options=pb.SearchOptions(
            k=k,
            min_score=min_score,
            max_matches_per_video=m,
            ef=_native.MAX_EF,
            filter=pb.SearchFilter(videos=videos, exclude_videos=exclude),
        ),
    )
    eligible = exact_hits(world, metric, q, min_score, videos, exclude)
    native = world.srv.front.answer(req.SerializeToString())
    assert native is not None, "a request with video filters must take the fast path"
    k, m = k or _native.DEFAULT_K, m or 1
    _check_against_exact(pb.SearchResponse.FromString(native), eligible, k, m, f"m-{metric}")
    _check_against_exact(world.python_answer(req), eligible, k, m, f"m-{metric}")


def test_another_collections_video_name_excludes_nothing(world):
    """Video ids are unique across collections, so "collections/l2/videos/<id of an ip video>"
    names no video; in exclude_videos it must not drop the ip video with that id, on either path
    (both did: they compared the id alone; found by the property test above)."""
    name = sorted(n for n in world.vectors if n.startswith("collections/ip/"))[0]
    for excluded, first in ([name.replace("/ip/", "/l2/")], name), ([name], None):
        req = pb.SearchByVectorRequest(
            parent="collections/ip",
            vector=world.vectors[name][0].tolist(),
            options=pb.SearchOptions(k=3, filter=pb.SearchFilter(exclude_videos=excluded)),
        )
        native = pb.SearchResponse.FromString(world.srv.front.answer(req.SerializeToString()))
        _same(native, world.python_answer(req))
        if first:
            assert native.hits[0].video.name == first
        else:  # the same name in its own collection is excluded
            assert name not in {h.video.name for h in native.hits} and len(native.hits) == 3


def test_finds_the_exact_best_videos(world):
    """Top videos (one timestamp each) against float64 brute force over every frame (a sample's
    coarse twin, where a video has them, is one more vector of that sample)."""
    d = world.srv.front
    names = sorted(n for n in world.vectors if n.startswith("collections/ip/"))
    frames = np.stack([world.vectors[n] for n in names]).astype(np.float64)  # [videos, samples, dim]
    # [videos, 2 * samples, dim]: a video without twins has its samples twice (same scores)
    both = np.stack([np.concatenate([world.vectors[n], world.twins.get(n, world.vectors[n])]) for n in names]).astype(
        np.float64
    )
    rng = np.random.default_rng(11)
    recalls, best_frame = [], []
    for i in range(60):
        q = frames[i % len(names), i % SAMPLES] + 0.3 * rng.standard_normal(DIM)
        q /= np.linalg.norm(q)
        best = (both @ q).max(axis=1)  # each video's best vector
        want = {names[j] for j in np.argsort(-best)[:5]}
        req = pb.SearchByVectorRequest(
            parent="collections/ip", vector=q.astype(np.float32).tolist(), options=pb.SearchOptions(k=5)
        )
        got = pb.SearchResponse.FromString(d.answer(req.SerializeToString()))
        assert len(got.hits) == 5
        recalls.append(len(want & {h.video.name for h in got.hits}) / 5)
        for h in got.hits:  # the score is the reported frame's, at most the video's best
            j = names.index(h.video.name)
            row = list(world.times[h.video.name]).index(h.matches[0].timestamp_seconds)
            assert min(abs(h.score - both[j, row] @ q), abs(h.score - both[j, SAMPLES + row] @ q)) < 1e-5
            assert h.score <= best[j] + 1e-5
            best_frame.append(h.score >= best[j] - 1e-5)
    assert np.mean(recalls) >= 0.97, recalls
    assert np.mean(best_frame) >= 0.9


def test_a_coarse_twin_hit_is_its_sample(world):
    """A query equal to a sample's coarse twin (indexed as vector n + i of its video) is answered
    with that video at sample i's timestamp, once, by the native path and the Python one alike."""
    d = world.srv.front
    for name, tw in list(world.twins.items())[:6]:
        row = 5
        req = pb.SearchByVectorRequest(
            parent="/".join(name.split("/")[:2]),
            vector=tw[row].tolist(),
            options=pb.SearchOptions(k=1, max_matches_per_video=4),
        )
        native = pb.SearchResponse.FromString(d.answer(req.SerializeToString()))
        _same(native, world.python_answer(req))
        top = native.hits[0]
        assert top.video.name == name and top.matches[0].timestamp_seconds == world.times[name][row]
        stamps = [m.timestamp_seconds for m in top.matches]
        assert len(stamps) == len(set(stamps))  # a sample found through both of its vectors counts once


def test_rpc_takes_the_fast_path_and_finds_the_frame(world):
    name = sorted(world.vectors)[5]
    before = world.stats()
    r = world.stub.SearchByVector(
        pb.SearchByVectorRequest(
            parent=name.rsplit("/videos/", 1)[0],
            vector=world.vectors[name][3].tolist(),
            options=pb.SearchOptions(k=3, max_matches_per_video=2),
        )
    )
    after = world.stats()
    assert after["fast"] == before["fast"] + 1 and after["forwarded"] == before["forwarded"]
    assert r.hits[0].video.name == name and r.hits[0].matches[0].timestamp_seconds in (1.5, 1.75)
    assert r.hits[0].score == pytest.approx(1.0, abs=1e-5)


def _status(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """code and the ErrorInfo reason from the google.rpc.Status trailer."""
    raw = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, f"no rich status in {exc}"
    st_ = status_pb2.Status.FromString(raw)
    info = error_details_pb2.ErrorInfo()
    assert st_.details and st_.details[0].Unpack(info)
    return exc.code(), info.reason


@pytest.mark.parametrize(
    "vector, parent, code, reason",
    [
        ([1.0, 2.0], "collections/ip", grpc.StatusCode.INVALID_ARGUMENT, "DIMENSION_MISMATCH"),
        ([math.nan] * DIM, "collections/ip", grpc.StatusCode.INVALID_ARGUMENT, "NON_FINITE_VECTOR"),
        ([0.0] * DIM, "collections/ip", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ([1.0] * DIM, "collections/nope", grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND"),
        ([1.0] * DIM, "videos/1", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ],
)
def test_bad_requests_are_declined_and_answered_by_the_service(world, vector, parent, code, reason):
    req = pb.SearchByVectorRequest(parent=parent, vector=vector)
    assert world.srv.front.answer(req.SerializeToString()) is None
    before = world.stats()["forwarded"]
    with pytest.raises(grpc.RpcError) as e:
        world.stub.SearchByVector(req)
    assert _status(e.value) == (code, reason)
    assert world.stats()["forwarded"] == before + 1


def test_bad_options_are_declined(world):
    for opts in (
        pb.SearchOptions(k=-1),
        pb.SearchOptions(k=1001),
        pb.SearchOptions(max_matches_per_video=101),
        pb.SearchOptions(ef=5000),
        pb.SearchOptions(min_score=math.nan),
    ):
        req = pb.SearchByVectorRequest(parent="collections/ip", vector=[1.0] * DIM, options=opts)
        assert world.srv.front.answer(req.SerializeToString()) is None
        with pytest.raises(grpc.RpcError) as e:
            world.stub.SearchByVector(req)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_malformed_bytes_are_declined(world):
    d = world.srv.front
    good = pb.SearchByVectorRequest(parent="collections/ip", vector=[1.0] * DIM).SerializeToString()
    assert d.answer(good) is not None
    for bad in (good[:-1], good[:5], b"\xff" * 12, b"\x00", good + b"\x0a"):
        assert d.answer(bad) is None


def test_video_filters_are_native_and_label_filters_pass_through(world):
    names = sorted(n for n in world.vectors if n.startswith("collections/ip/"))
    q = world.vectors[names[0]][2]
    before = world.stats()
    r = world.stub.SearchByVector(
        pb.SearchByVectorRequest(
            parent="collections/ip",
            vector=q.tolist(),
            options=pb.SearchOptions(k=5, filter=pb.SearchFilter(exclude_videos=[names[0]])),
        )
    )
    assert world.stats()["fast"] == before["fast"] + 1
    assert len(r.hits) == 5 and names[0] not in {h.video.name for h in r.hits}
    r = world.stub.SearchByVector(
        pb.SearchByVectorRequest(
            parent="collections/ip",
            vector=q.tolist(),
            options=pb.SearchOptions(filter=pb.SearchFilter(labels={"a": "b"})),
        )
    )
    assert world.stats()["forwarded"] == before["forwarded"] + 1
    assert r.hits == []  # no video carries that label
    with pytest.raises(grpc.RpcError) as e:  # a malformed name: declined, the service says why
        world.stub.SearchByVector(
            pb.SearchByVectorRequest(
                parent="collections/ip",
                vector=q.tolist(),
                options=pb.SearchOptions(filter=pb.SearchFilter(videos=["x"])),
            )
        )
    assert _status(e.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert world.stats()["forwarded"] == before["forwarded"] + 2


def test_commits_reach_the_fast_path_at_once(world):
    svc = world.srv.service
    rec = world.run(svc.collections.get("ip"))
    v = np.random.default_rng(99).standard_normal((4, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    vid = svc.storage.add_video(rec.id, _video(rec.id, 999), np.array([0.0, 1.0, 2.0, 3.0]), v).id
    name = f"collections/ip/videos/{vid}"
    req = pb.SearchByVectorRequest(parent="collections/ip", vector=v[2].tolist(), options=pb.SearchOptions(k=1))
    r = world.stub.SearchByVector(req)
    assert r.hits[0].video.name == name and r.hits[0].matches[0].timestamp_seconds == 2.0
    world.stub.DeleteVideo(pb.DeleteVideoRequest(name=name))
    r = world.stub.SearchByVector(req)
    assert name not in {h.video.name for h in r.hits}
    # a new collection is searchable natively as soon as it exists; a deleted one is gone
    fresh = world.stub.CreateCollection(pb.CreateCollectionRequest(collection_id="fresh"))
    req = pb.SearchByVectorRequest(parent="collections/fresh", vector=[1.0] * fresh.dimension)
    assert world.srv.front.answer(req.SerializeToString()) is not None
    assert len(world.stub.SearchByVector(req).hits) == 0
    world.stub.DeleteCollection(pb.DeleteCollectionRequest(name="collections/fresh"))
    assert world.srv.front.answer(req.SerializeToString()) is None
    with pytest.raises(grpc.RpcError) as e:
        world.stub.SearchByVector(req)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_pass_through_streams_and_deadlines(world):
    # server streaming and client streaming calls, reflection (bidi) and health through the proxy
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    hs = health_pb2_grpc.HealthStub(world.channel)
    before = world.stats()
    for service in ("", "frameseek.v1.FrameSeek"):  # answered natively
        assert hs.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
    after = world.stats()
    assert after["health"] == before["health"] + 2 and after["forwarded"] == before["forwarded"]
    with pytest.raises(grpc.RpcError) as e:  # unknown: the Python servicer's answer
        hs.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    watch = hs.Watch(health_pb2.HealthCheckRequest(service=""))  # server streaming, passed through
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    rs = reflection_pb2_grpc.ServerReflectionStub(world.channel)
    reqs = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="frameseek.v1.FrameSeek"),
    ]
    out = list(rs.ServerReflectionInfo(iter(reqs)))
    assert len(out) == 2
    assert "frameseek.v1.FrameSeek" in {s.name for s in out[0].list_services_response.service}
    # a client-streaming call whose first message is missing: the service's own error comes back
    with pytest.raises(grpc.RpcError) as e:
        world.stub.IngestVideo(iter([pb.IngestVideoRequest(chunk=b"x" * 10)]))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # the caller's deadline reaches the service: an expired one fails fast, whatever the path. The
    # service's loop is held meanwhile, so that its answer cannot beat a deadline of a millisecond
    # (gRPC's resolution): before, an invalid vector's INVALID_ARGUMENT sometimes did
    held, release = threading.Event(), threading.Event()
    world.loop.call_soon_threadsafe(lambda: (held.set(), release.wait(30)))
    assert held.wait(30)
    try:
        for call in (
            lambda: world.stub.ListVideos(pb.ListVideosRequest(parent="collections/ip"), timeout=1e-6),
            lambda: world.stub.SearchByVector(pb.SearchByVectorRequest(vector=[1.0] * DIM), timeout=1e-6),
        ):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        release.set()
    # and the server still serves
    assert world.stub.ListVideos(pb.ListVideosRequest(parent="collections/ip", page_size=3)).videos


def test_while_loading_health_says_not_serving_and_search_is_unavailable(tmp_path, monkeypatch):
    """The front end binds before the index is loaded: searches reach the service, which answers
    UNAVAILABLE (NOT_READY), and Health/Check answers NOT_SERVING natively, until the load is done."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from frameseek.service import FrameSeekService

    release = threading.Event()
    real_start = FrameSeekService.start

    async def slow_start(self):
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 60)
        await real_start(self)

    monkeypatch.setattr(FrameSeekService, "start", slow_start)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=120)

    srv, port = run(create_server(Settings(address="127.0.0.1:0", data_dir=str(tmp_path), metrics_address="")))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            hs, fs = health_pb2_grpc.HealthStub(ch), pb_grpc.FrameSeekStub(ch)
            assert hs.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            req = pb.SearchByVectorRequest(vector=[1.0] * 512)
            with pytest.raises(grpc.RpcError) as e:
                fs.SearchByVector(req)
            assert _status(e.value) == (grpc.StatusCode.UNAVAILABLE, "NOT_READY")
            release.set()
            run(srv.wait_ready())
            assert hs.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
            dim = run(srv.service.collections.get("")).dimension
            assert fs.SearchByVector(pb.SearchByVectorRequest(vector=[1.0] * dim)).hits == []
            assert srv.front.stats()["fast"] == 1
    finally:
        release.set()
        run(srv.stop(1))
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_concurrent_searches_pass_throughs_and_commits(world):
    """Native searches, passed-through calls and commits at once: no call fails, and a video is
    never returned by a search that starts after its DeleteVideo returned."""
    import concurrent.futures

    svc = world.srv.service
    rec = world.run(svc.collections.get("l2"))
    rng = np.random.default_rng(5)
    probe = rng.standard_normal(DIM).astype(np.float32) * 0.01
    req = pb.SearchByVectorRequest(
        parent="collections/l2", vector=probe.tolist(), options=pb.SearchOptions(k=3, max_matches_per_video=2)
    )
    deleted: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[Exception] = []

    def searcher() -> int:
        n = 0
        while not stop.is_set():
            with lock:
                gone = set(deleted)
            try:
                r = world.stub.SearchByVector(req, timeout=30)
                world.stub.ListVideos(pb.ListVideosRequest(parent="collections/l2", page_size=2), timeout=30)
            except grpc.RpcError as e:  # pragma: no cover - reported below
                errors.append(e)
                return n
            leaked = gone & {h.video.name for h in r.hits}
            if leaked:
                errors.append(AssertionError(f"deleted videos returned: {leaked}"))
            n += 1
        return n

    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        futures = [ex.submit(searcher) for _ in range(6)]
        for i in range(25):  # videos right at the probe: each is the best hit while it exists
            v = (probe + 0.001 * rng.standard_normal((3, DIM))).astype(np.float32)
            vid = svc.storage.add_video(rec.id, _video(rec.id, 5000 + i), np.arange(3, dtype=np.float64), v).id
            name = f"collections/l2/videos/{vid}"
            assert world.stub.SearchByVector(req).hits[0].video.name == name
            world.stub.DeleteVideo(pb.DeleteVideoRequest(name=name))
            with lock:
                deleted.add(name)
        stop.set()
        calls = [f.result() for f in futures]
    assert not errors, errors[:3]
    assert min(calls) > 0


def test_a_big_commit_leaves_its_messages_to_the_filler_and_is_searchable_at_once(tmp_path):
    """An UpsertItems-sized commit does not encode its videos' messages on the committing thread:
    a search that hits one meanwhile is answered (passed through), and once the filler has run,
    by the fast path. A small commit (an ingest) still encodes at once."""
    from frameseek.storage import NewVideo

    w = World(tmp_path)
    try:
        front, svc, me = w.srv.front, w.srv.service, threading.get_ident()
        encoded_on: list[int] = []
        encode = front.video_bytes

        def counting(rec):
            encoded_on.append(threading.get_ident())
            return encode(rec)

        front.video_bytes = counting
        rec = svc.storage.create_collection(
            "bulk", model="m", dimension=DIM, metric="ip", sampling={}, index={"m": 8, "ef_construction": 64}
        )
        n = front_end.SYNC_MESSAGES * 4
        vecs = np.random.default_rng(9).standard_normal((n + 1, DIM)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        videos = svc.storage.add_videos(
            rec.id, [NewVideo(_video(rec.id, 1000 + i), np.zeros(1), vecs[i : i + 1]) for i in range(n)]
        )
        assert me not in encoded_on  # the commit encoded nothing itself
        req = pb.SearchByVectorRequest(
            parent="collections/bulk", vector=vecs[7].tolist(), options=pb.SearchOptions(k=1)
        )
        first = w.stub.SearchByVector(req)
        assert first.hits[0].video.name == f"collections/bulk/videos/{videos[7].id}"
        deadline = time.monotonic() + 60  # a guard against a filler that never runs, not a speed bound
        while len(encoded_on) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(encoded_on) == n and me not in encoded_on
        before = w.stats()
        again = w.stub.SearchByVector(req)
        assert w.stats()["fast"] == before["fast"] + 1
        _same(again, first)
        svc.storage.add_video(rec.id, _video(rec.id, 5000), np.zeros(1), vecs[n:])
        assert encoded_on[-1] == me  # a small commit: at once, by the committing thread
    finally:
        w.close()
