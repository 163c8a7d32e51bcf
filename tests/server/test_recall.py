"""The recall the server knows (issue 22, frameseek.service.recall): sampled real searches re-run
exactly in the background, a measured recall with its interval, the search breadth tuned to the
collection's target, and both reported by GetStats and Prometheus.

Real index, real storage and the real search path (`Search.nearest_videos`, the native
SearchDirectory that SearchByVector / SearchByImage and the native front end run); the monitor's
clocks are injected, so that nothing here depends on how fast this machine is. The reference is an
independent exact search: `_native.FlatIndex.search_groups` over every vector."""

from __future__ import annotations

import math
import pathlib
import shutil
import socket
import time
import urllib.request

import grpc
import numpy as np
import pytest

from benchmarks.datasets import video_like, video_like_queries
from frameseek import _native
from frameseek.client import FrameSeekError
from frameseek.config import RecallConfig, Settings
from frameseek.service.collections import Collections, Videos
from frameseek.service.core import Core
from frameseek.service.recall import MAX_EF, EfTuner, RecallMonitor, exact_top_videos, wilson
from frameseek.service.search import Search
from frameseek.service.types import SearchOptions
from frameseek.storage import TUNED_EF, EmbeddedStorage, VideoRecord

from .helpers import ServerProcess, needs_index

# video_like data on which the collection's ef_search floor gives poor recall@10 of videos
# (0.82 at the floor, 0.97 at ef 21; a sparse graph: M 4, ef_construction 16)
DIM, N, PER_VIDEO, FLOOR, K = 64, 24_000, 60, 4, 10
M, EF_CONSTRUCTION = 4, 16
TARGET = 0.95


def _fill(data_dir: pathlib.Path, *, ef_search: int = FLOOR, target: float = TARGET) -> tuple[np.ndarray, np.ndarray]:
    """A library of video_like vectors (one video per `groups` value) through the storage's commit
    path; returns (vectors, video ids) as stored."""
    vectors, groups = video_like(N, DIM, frames_per_video=PER_VIDEO, seed=3)
    st = EmbeddedStorage(str(data_dir), snapshot_every=10**12)
    st.open()
    c = st.create_collection(
        "lib",
        model="sscd_distilled",
        dimension=DIM,
        metric="ip",
        sampling={"fps": 1.0},
        index={"m": M, "ef_construction": EF_CONSTRUCTION, "ef_search": ef_search, "target_recall": target},
    )
    video_ids = np.empty(len(vectors), dtype=np.uint64)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        rec = VideoRecord(
            id=0,
            collection_id=c.id,
            kind="video",
            duration=float(len(rows)),
            width=64,
            height=64,
            sample_count=len(rows),
            size_bytes=0,
            content_sha256=f"v{g}",
            external_key=f"v{g}",
        )
        rec = st.add_video(c.id, rec, np.arange(len(rows), dtype=np.float64), vectors[rows])
        video_ids[rows] = rec.id
    st.link_all()  # all in the graph whatever the low-priority linker got to (the exact segment lifts recall)
    st.close(snapshot=True)
    return vectors, video_ids


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Searching:
    """The service's search over a filled data dir, with the recall monitor's clocks injected."""

    def __init__(self, data_dir: pathlib.Path, **recall):
        self.settings = Settings(data_dir=str(data_dir), metrics_address="", recall=recall)
        self.core = Core(self.settings, EmbeddedStorage(str(data_dir)), embedder=None)
        self.search = Search(self.core, Collections(self.core), Videos(self.core, Collections(self.core)))
        self.clock, self.cpu = FakeClock(), FakeClock()
        self.search.recall = self.monitor = RecallMonitor(
            self.search.directory, self.settings, self.core.storage, clock=self.clock, cpu_clock=self.cpu
        )
        self.core.storage.open()
        self.search.follow_storage()
        self.rec = self.core.storage.get_collection("lib")

    def query(self, q: np.ndarray, ef: int = 0) -> list[int]:
        hits = self.search.nearest_videos(self.rec, q[None, :], SearchOptions(k=K, ef=ef), None, set())
        return [h.video.id for h in hits]

    def close(self) -> None:
        self.core.storage.close(snapshot=False)


def exact_recall(lib: Searching, vectors, video_ids, queries, ef: int = 0) -> float:
    """Mean recall@K of videos against FlatIndex.search_groups (exact), as the monitor defines it."""
    flat = _native.FlatIndex(DIM, "ip")
    flat.add(np.arange(len(vectors), dtype=np.uint64), vectors, groups=video_ids)
    groups, _, dist = flat.search_groups(queries, K)
    out = []
    for i, q in enumerate(queries):
        got = lib.query(q, ef)
        truth = {int(g) for g in groups[i]}
        out.append(len(truth & set(got)) / K)
    return float(np.mean(out))


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    d = tmp_path_factory.mktemp("recall") / "data"
    vectors, video_ids = _fill(d)
    return d, vectors, video_ids


@pytest.fixture
def own_library(library, tmp_path):
    """A copy of the library for a test that tunes: the tuned breadth is stored in its catalog."""
    data_dir, vectors, video_ids = library
    shutil.copytree(data_dir, tmp_path / "data")
    return tmp_path / "data", vectors, video_ids


@needs_index
def test_exact_top_videos_matches_an_independent_exact_search(library):
    data_dir, vectors, video_ids = library
    lib = Searching(data_dir)
    try:
        queries = video_like_queries(vectors, 20, seed=11)
        watched = lib.monitor._watched[lib.rec.id]
        got_ids, got = exact_top_videos(watched.index, sorted(watched.videos.items()), queries, K)
        flat = _native.FlatIndex(DIM, "ip")
        flat.add(np.arange(len(vectors), dtype=np.uint64), vectors, groups=video_ids)
        want_ids, _, dist = flat.search_groups(queries, K)
        np.testing.assert_array_equal(got_ids, want_ids)
        np.testing.assert_allclose(got, 1.0 - dist, atol=1e-5)
    finally:
        lib.close()


def _drive(lib: Searching, queries: np.ndarray, rounds: int, per_round: int = 32, until=None) -> list[int]:
    """Real searches (ef unset) between monitor steps; the clock moves one second per round; stops
    after `rounds` or once until() holds. Returns the breadth in use after each round."""
    efs = []
    for r in range(rounds):
        for q in queries[(r * per_round) % len(queries) :][:per_round]:
            lib.query(q)
        lib.clock.now += 1.0
        while lib.monitor.step():
            pass
        efs.append(lib.monitor.ef_in_use(lib.rec))
        if until is not None and until():
            break
    return efs


@needs_index
def test_the_tuner_raises_ef_until_measured_recall_meets_the_target(own_library):
    data_dir, vectors, video_ids = own_library
    lib = Searching(data_dir, sample_every=1, batch=32, cpu_share=1.0, burst_cpu_s=10.0)
    try:
        held_out = video_like_queries(vectors, 1000, seed=21)
        before = exact_recall(lib, vectors, video_ids, held_out)
        assert before < 0.9, f"the floor should give poor recall on this data, got {before:.3f}"
        assert lib.monitor.ef_in_use(lib.rec) == FLOOR

        tuner = lib.monitor._watched[lib.rec.id].tuner

        def settled() -> bool:  # a full window at the breadth in use, its lower bound on target
            est = tuner.estimate()
            return est.samples >= lib.settings.recall.window and est.lower >= TARGET

        efs = _drive(lib, video_like_queries(vectors, 6000, seed=22), rounds=200, until=settled)
        assert settled(), (efs, tuner.estimate())
        stats = lib.monitor.stats(lib.rec.id)
        assert stats["search_ef"] > FLOOR and stats["measured_recall_lower"] >= TARGET, (efs, stats)
        assert sorted(efs) == efs  # only raised on the way
        assert lib.search.directory.search_ef(lib.rec.id) == stats["search_ef"]  # what the native search uses
        # the measured figure agrees with an offline exact computation on other queries: the two
        # estimates lie within their intervals' reach of each other
        est = tuner.estimate()
        after = exact_recall(lib, vectors, video_ids, held_out)
        offline_half = 1.96 * math.sqrt(after * (1 - after) / len(held_out))
        assert abs(after - est.recall) <= (est.upper - est.lower) / 2 + offline_half, (est, after)
        assert after >= TARGET - offline_half
    finally:
        lib.close()


@needs_index
def test_an_explicit_ef_wins_over_the_tuned_breadth(own_library):
    data_dir, vectors, video_ids = own_library
    lib = Searching(data_dir, sample_every=1, batch=32, cpu_share=1.0, burst_cpu_s=10.0)
    try:
        probe = video_like_queries(vectors, 300, seed=31)
        _drive(
            lib,
            video_like_queries(vectors, 6000, seed=32),
            rounds=100,
            until=lambda: lib.monitor.ef_in_use(lib.rec) >= 21,
        )
        assert lib.monitor.ef_in_use(lib.rec) >= 21
        # a request that sets ef = the floor gets the floor's poor recall, not the tuned breadth's
        assert exact_recall(lib, vectors, video_ids, probe, ef=FLOOR) < 0.9
        assert exact_recall(lib, vectors, video_ids, probe) > 0.93
        # and the monitor files such a search under the ef it really used
        lib.search.directory.take_sampled_searches(lib.rec.id)
        lib.query(probe[0], ef=FLOOR + 3)
        taken, _ = lib.search.directory.take_sampled_searches(lib.rec.id)
        assert [s[3] for s in taken] == [FLOOR + 3]
    finally:
        lib.close()


@needs_index
def test_the_tuned_breadth_survives_a_restart(own_library):
    """The breadth tuned before a restart is the one in use after it (the storage reopened from
    disk), and a request's own ef still wins."""
    data_dir, vectors, _ = own_library
    lib = Searching(data_dir, sample_every=1, batch=32, cpu_share=1.0, burst_cpu_s=10.0)
    try:
        _drive(
            lib,
            video_like_queries(vectors, 6000, seed=52),
            rounds=100,
            until=lambda: lib.monitor.ef_in_use(lib.rec) >= 21,
        )
        tuned = lib.monitor.ef_in_use(lib.rec)
        assert tuned >= 21
    finally:
        lib.close()  # without a snapshot: the catalog write alone must keep it
    lib = Searching(data_dir, sample_every=1)
    try:
        assert lib.monitor.ef_in_use(lib.rec) == tuned
        assert lib.search.directory.search_ef(lib.rec.id) == tuned  # what the native search walks at
        assert lib.monitor.stats(lib.rec.id)["search_ef"] == tuned
        lib.search.directory.take_sampled_searches(lib.rec.id)
        probe = video_like_queries(vectors, 2, seed=53)
        lib.query(probe[0])
        lib.query(probe[1], ef=FLOOR)
        taken, _ = lib.search.directory.take_sampled_searches(lib.rec.id)
        assert [s[3] for s in taken] == [tuned, FLOOR]
    finally:
        lib.close()


def test_a_breadth_stored_under_other_settings_is_not_restored():
    stored = {"ef": 200, "floor": FLOOR, "target": TARGET}

    class Rec:
        index = {"ef_search": FLOOR, "target_recall": TARGET, TUNED_EF: stored}

    assert RecallMonitor._stored_ef(Rec, FLOOR, TARGET) == 200
    assert RecallMonitor._stored_ef(Rec, FLOOR + 1, TARGET) is None  # another floor: start from it
    assert RecallMonitor._stored_ef(Rec, FLOOR, 0.99) is None
    assert EfTuner(FLOOR, TARGET, RecallConfig(), start=10**9).ef == MAX_EF
    assert EfTuner(FLOOR, TARGET, RecallConfig(), start=1).ef == FLOOR


@needs_index
def test_the_exact_reruns_stay_within_their_cpu_share(library):
    """Work counted, not timed: each exact batch is charged a fixed 0.2 CPU-seconds on the injected
    CPU clock, and over 200 simulated seconds at a 5 % share the monitor may run at most
    (0.05 * 200 + burst) / 0.2 + 1 batches, however many searches were sampled."""
    data_dir, vectors, _ = library
    share, burst, cost = 0.05, 0.5, 0.2
    lib = Searching(data_dir, sample_every=1, batch=8, cpu_share=share, burst_cpu_s=burst)
    try:
        measure = lib.monitor.measure

        def charged(w, batch):
            lib.cpu.now += cost
            return measure(w, batch)

        lib.monitor.measure = charged
        queries = video_like_queries(vectors, 800, seed=41)
        batches = 0
        for i in range(400):  # 0.5 s per tick, 8 searches per tick: far more than the share buys
            for q in queries[(i * 8) % 800 :][:8]:
                lib.query(q)
            lib.clock.now += 0.5
            batches += lib.monitor.step() > 0
        elapsed = lib.clock.now
        allowed = (share * elapsed + burst) / cost + 1
        assert batches <= allowed
        assert batches >= (share * elapsed) / cost - 1  # and it does use its share
        assert lib.monitor.bucket.spent == pytest.approx(batches * cost)
        assert lib.monitor._watched[lib.rec.id].overflow > 0  # the rest was left unmeasured
    finally:
        lib.close()


def test_wilson_interval():
    lo, hi = wilson(1.0, 73, 1.959963984540054)
    assert lo == pytest.approx(73 / (73 + 1.959963984540054**2))
    assert hi == pytest.approx(1.0)
    lo, hi = wilson(0.5, 100, 1.96)
    assert lo < 0.5 < hi and math.isclose(0.5 - lo, hi - 0.5)


def test_the_tuner_lowers_the_breadth_with_hysteresis_never_below_the_floor():
    tuner = EfTuner(16, TARGET, RecallConfig())
    n = RecallConfig().min_samples

    def feed(recall: float) -> int | None:
        for _ in range(n):
            tuner.record(tuner.ef, recall, K)
        return tuner.decide()

    assert feed(0.5) == 24  # short: up by raise_factor
    assert feed(1.0) is None  # comfortably above, but 16 just fell short: stay
    tuner.seen += 10 * RecallConfig().window  # long after that
    assert feed(1.0) == 16
    assert feed(1.0) is None  # never below the floor
    tuner._move(54)
    assert feed(0.975) is None  # above the target, not comfortably: stay
    assert [feed(1.0) for _ in range(3)] == [36, 24, 16]
    tuner._move(MAX_EF)
    assert feed(0.0) is None  # never above MAX_EF


def _scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line and not line.startswith("#")
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_index
def test_get_stats_and_prometheus_report_the_measured_recall_and_the_tuned_ef(tmp_path):
    """Through a real server (the native front end where built: its SearchByVector is sampled too)."""
    vectors, _ = _fill(tmp_path / "data")
    port = _free_port()
    srv = ServerProcess(
        tmp_path / "data",
        metrics_address=f"127.0.0.1:{port}",
        env={
            "FRAMESEEK_RECALL__SAMPLE_EVERY": "1",
            "FRAMESEEK_RECALL__CPU_SHARE": "1.0",
            "FRAMESEEK_RECALL__PERIOD_S": "0.05",
        },
    ).start()
    try:
        with srv.client() as fs:
            queries = video_like_queries(vectors, 4000, seed=51)
            # the monitor's thread runs at nice 19 on a shared machine: wait for its progress (a
            # bound on waiting, not on speed); each raise starts a new window at the new breadth
            give_up, i = time.monotonic() + 240, 0
            while True:
                for q in queries[(i * 20) % 4000 :][:20]:
                    fs.search_by_vector(q.tolist(), collection="lib", k=K)
                i += 1
                stats = {c.collection: c for c in fs.stats().collections}["collections/lib"]
                if (stats.search_ef > FLOOR and stats.recall_samples >= 50) or time.monotonic() > give_up:
                    break
                time.sleep(0.02)
            assert stats.search_ef > FLOOR and stats.recall_samples >= 50, stats
            assert 0 < stats.measured_recall_lower <= stats.measured_recall <= 1

            # the collection setting: stored, reported, and checked
            c = fs.create_collection("strict", target_recall=0.99)
            assert c.index.target_recall == pytest.approx(0.99)
            assert fs.get_collection("collections/lib").index.target_recall == pytest.approx(TARGET)
            with pytest.raises(FrameSeekError) as ei:
                fs.create_collection("loose", target_recall=1.5)
            assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT, ei.value
            # layer0_links (the graph's memory lever): resolved, stored, reported, checked against m
            m = _native.HNSW_DEFAULT_M
            assert c.index.m == m and c.index.layer0_links == _native.hnsw_default_layer0_links(m)
            assert fs.create_collection("compact", layer0_links=m).index.layer0_links == m
            assert fs.get_collection("compact").index.layer0_links == m
            for bad in (m - 1, _native.HNSW_MAX_LAYER0_LINKS + 1):
                with pytest.raises(FrameSeekError) as ei:
                    fs.create_collection("odd", layer0_links=bad)
                assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT and "layer0_links" in str(ei.value)
            # the same figures in Prometheus, read while the monitor is at rest (searches stopped:
            # it finishes what was sampled; GetStats before and after the scrape agree)
            for _ in range(200):
                before = {c.collection: c for c in fs.stats().collections}["collections/lib"]
                values = _scrape(port)
                stats = {c.collection: c for c in fs.stats().collections}["collections/lib"]
                if before == stats:
                    break
                time.sleep(0.1)
        assert values['frameseek_search_ef{collection="lib"}'] == stats.search_ef > FLOOR
        assert values['frameseek_recall_samples{collection="lib"}'] == stats.recall_samples
        assert values['frameseek_recall{collection="lib"}'] == pytest.approx(stats.measured_recall)
        assert values['frameseek_recall_lower{collection="lib"}'] == pytest.approx(stats.measured_recall_lower)
        assert values['frameseek_recall_upper{collection="lib"}'] >= stats.measured_recall
        assert values['frameseek_recall_target{collection="lib"}'] == pytest.approx(TARGET)
        assert values['frameseek_recall_target{collection="strict"}'] == pytest.approx(0.99)
        assert values["frameseek_recall_measured_total"] >= 50
        if _native.HAVE_FRONT_END:  # the searches were the native front end's, and were sampled
            assert values['frameseek_front_end_calls_total{path="native"}'] >= 50
            assert not [m for m in values if m.startswith('frameseek_requests_total{method="SearchByVector"')]
    finally:
        srv.stop()
