"""Operational surface: UNAVAILABLE before the index is loaded, Prometheus metrics."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

import pytest

from frameseek.client import FrameSeekError
from frameseek.config import Settings
from frameseek.errors import ErrorCode, ServiceError
from frameseek.ids import MAX_SAMPLES_PER_VIDEO
from frameseek.media.sampling import TimeGridSampler
from frameseek.service import FrameSeekService, SearchOptions
from frameseek.storage.base import CollectionRecord

from .helpers import ServerProcess, make_video, needs_index, needs_media


def test_calls_before_the_index_is_loaded_are_unavailable(tmp_path):
    svc = FrameSeekService(Settings(data_dir=str(tmp_path), metrics_address=""))

    async def call():
        await svc.search.by_vector("", [1.0] * 512, SearchOptions())

    with pytest.raises(ServiceError) as ei:
        asyncio.run(call())
    assert (ei.value.code, ei.value.reason) == (ErrorCode.UNAVAILABLE, "NOT_READY")
    asyncio.run(svc.close())


@pytest.mark.parametrize("index_coarse_scale, vectors_per_sample", [(0.5, 2), (0.0, 1)])
def test_long_videos_are_sampled_within_the_vectors_a_video_may_hold(tmp_path, index_coarse_scale, vectors_per_sample):
    """The longest video the server takes (max_video_seconds) at the highest rate a collection may
    ask (30 fps) must fit a video's 2**SAMPLE_BITS index vectors, coarse twins included: its grid
    is made sparser up front instead of the ingest failing after hours of embedding."""
    settings = Settings(data_dir=str(tmp_path), metrics_address="", views={"index_coarse_scale": index_coarse_scale})
    svc = FrameSeekService(settings)
    rec = CollectionRecord(
        id=1, name="c", model=settings.model, dimension=512, metric="ip", sampling={"fps": 30.0}, index={}
    )
    sampling = svc.core.sampling(rec)
    longest = settings.media.max_duration_s
    samples = TimeGridSampler(sampling.grid_fps(longest)).expected_samples(longest)
    assert vectors_per_sample * samples <= MAX_SAMPLES_PER_VIDEO
    assert sampling.grid_fps(600.0) == 30.0  # ordinary videos keep the collection's rate
    if vectors_per_sample == 1:  # without twins 6 h at 30 fps fit as they are
        assert sampling.grid_fps(longest) == 30.0
    asyncio.run(svc.close())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_index
def test_prometheus_metrics(tmp_path):
    port = _free_port()
    srv = ServerProcess(tmp_path / "data", metrics_address=f"127.0.0.1:{port}").start()
    try:
        with srv.client() as fs:
            fs.stats()
            with pytest.raises(FrameSeekError):
                fs.get_video("collections/default/videos/1")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
        assert 'frameseek_requests_total{code="OK",method="GetStats"} 1.0' in body
        assert 'frameseek_requests_total{code="NOT_FOUND",method="GetVideo"} 1.0' in body
        assert 'frameseek_index_vectors{collection="default"} 0.0' in body
        assert "frameseek_request_seconds_bucket" in body and "frameseek_ready 1.0" in body
        assert "frameseek_stalls_total 0.0" in body  # the watchdog saw nothing stuck
        from frameseek import front_end

        if front_end.available():  # the native front end's counters (health checks are answered natively)
            assert 'frameseek_front_end_calls_total{path="forwarded"}' in body
            assert "frameseek_front_end_native_search_seconds_total" in body
    finally:
        assert srv.stop() == 0, srv.log()


@needs_media
def test_index_vectors_gauge_follows_ingest_and_delete(tmp_path):
    """The gauge counts index vectors (samples plus their coarse twins), whatever comes and goes."""
    port = _free_port()
    srv = ServerProcess(tmp_path / "data", metrics_address=f"127.0.0.1:{port}").start()

    def gauge() -> float:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
        line = next(ln for ln in body.splitlines() if ln.startswith('frameseek_index_vectors{collection="default"}'))
        return float(line.split()[-1])

    try:
        with srv.client(timeout=600) as fs:
            a = fs.ingest_video(make_video(tmp_path / "a.mp4", seconds=4, seed=1)).video
            b = fs.ingest_video(make_video(tmp_path / "b.mp4", seconds=3, seed=2)).video
            indexed = fs.stats().collections[0].index_vectors
            assert indexed == 2 * (a.sample_count + b.sample_count)  # coarse twins are on by default
            assert gauge() == indexed
            fs.delete_video(a.name)
            assert gauge() == fs.stats().collections[0].index_vectors == 2 * b.sample_count
            fs.delete_video(b.name)
            assert gauge() == 0
    finally:
        assert srv.stop() == 0, srv.log()


def test_the_serving_process_collects_less_often_and_not_what_start_up_made():
    import asyncio
    import gc

    from frameseek import server

    before = gc.get_threshold()
    try:
        server.tune_gc()
        assert gc.get_threshold() == (server.GC_FIRST_GENERATION, *before[1:])
    finally:
        gc.set_threshold(*before)

    async def loaded(fail: bool):
        task = asyncio.get_running_loop().create_task(asyncio.sleep(0, result=None))
        if fail:
            task = asyncio.get_running_loop().create_task(asyncio.wait_for(asyncio.Event().wait(), 0.001))
        await asyncio.gather(task, return_exceptions=True)
        return task

    try:
        server._freeze_startup_objects(asyncio.run(loaded(fail=True)))  # a failed start freezes nothing
        assert gc.get_freeze_count() == 0
        server._freeze_startup_objects(asyncio.run(loaded(fail=False)))
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
