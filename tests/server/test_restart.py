"""A restart's work after SERVING (benchmarks/load/README.md, restart time): what a server no
longer does before it reports SERVING - the catalog rows' checksums, the Video messages of the
stored videos - still happens, and searches are answered the same while it does."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import threading

import grpc
import numpy as np
import pytest

from frameseek.config import Settings
from frameseek.server import create_server
from frameseek.storage import EmbeddedStorage, VideoRecord
from frameseek.v1 import frameseek_pb2 as pb
from frameseek.v1 import frameseek_pb2_grpc as pb_grpc

from .helpers import needs_index

pytestmark = needs_index
DIM = 32


def _fill(data_dir: pathlib.Path, videos: int, marker: str = "") -> dict[int, np.ndarray]:
    """A closed data dir with collection 'c' of `videos` videos (4 random unit vectors each); the
    last one's filename holds `marker`. Returns video id -> its vectors."""
    rng = np.random.default_rng(5)
    st = EmbeddedStorage(str(data_dir))
    st.open()
    c = st.create_collection("c", model="own", dimension=DIM, metric="ip", sampling={}, index={"ef_search": 64})
    out = {}
    for i in range(videos):
        v = rng.standard_normal((4, DIM)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        rec = VideoRecord(
            id=0,
            collection_id=c.id,
            kind="video",
            duration=4.0,
            width=64,
            height=48,
            sample_count=4,
            size_bytes=1,
            content_sha256=f"sha-{i}",
            filename=f"clip-{marker}.mp4" if marker and i == videos - 1 else f"clip-{i}.mp4",
        )
        out[st.add_video(c.id, rec, np.arange(4.0), v).id] = v
    st.close()
    return out


class _Server:
    """A server in this process on a free port (its event loop in a thread, as `frameseek serve`)."""

    def __init__(self, data_dir: pathlib.Path, front_end: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        settings = Settings(address="127.0.0.1:0", data_dir=str(data_dir), metrics_address="", front_end=front_end)
        self.srv, port = self.run(create_server(settings))
        self.run(self.srv.wait_ready())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.FrameSeekStub(self.channel)

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def top(self, vector: np.ndarray) -> str:
        r = self.stub.SearchByVector(pb.SearchByVectorRequest(parent="collections/c", vector=vector.tolist()))
        return r.hits[0].video.name if r.hits else ""

    def close(self):
        self.channel.close()
        self.run(self.srv.stop(1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.mark.parametrize("front_end", ["native", "python"])
def test_a_catalog_row_altered_on_disk_is_still_found_and_reported_after_a_restart(tmp_path, front_end):
    """The row check runs after SERVING now: once it has, the altered video is damaged in GetVideo,
    listed in GetStats' recovery problems and found by no search (either front end)."""
    videos = _fill(tmp_path, 6, marker="MARKER-e1f4")
    marked = max(videos)
    path = tmp_path / "catalog.sqlite3"
    data = bytearray(path.read_bytes())
    at = data.find(b"MARKER-e1f4")
    data[at + 5] ^= 0x01
    path.write_bytes(bytes(data))
    s = _Server(tmp_path, front_end)
    try:
        assert s.srv.service.storage.rows_checked.wait(120), "the row check ran"
        stats = s.stub.GetStats(pb.GetStatsRequest())
        assert any("fail their checksums" in p for p in stats.recovery_problems), stats.recovery_problems
        name = f"collections/c/videos/{marked}"
        assert s.stub.GetVideo(pb.GetVideoRequest(name=name)).state == pb.VIDEO_STATE_DAMAGED
        assert s.top(videos[marked][0]) != name
        for vid in sorted(videos)[:-1]:
            assert s.top(videos[vid][1]) == f"collections/c/videos/{vid}"
    finally:
        s.close()


@contextlib.contextmanager
def _warm_fast_path(data_dir: pathlib.Path, videos: int):
    """A restarted server (native front end) over `videos` videos (`_fill`), once the fill of its
    Video messages has finished: (server, video id -> vectors)."""
    filled = _fill(data_dir, videos)
    s = _Server(data_dir, "native")
    try:
        s.srv.warmer.join(120)
        assert not s.srv.warmer.is_alive()
        yield s, filled
    finally:
        s.close()


def test_the_fast_path_answers_a_restarted_servers_videos_once_their_messages_are_filled(tmp_path):
    with _warm_fast_path(tmp_path, 8) as (s, videos):
        front = s.srv.front
        assert len(front.messages) == len(videos)
        for vid, v in videos.items():
            fast = front.stats()["fast"]
            assert s.top(v[2]) == f"collections/c/videos/{vid}"
            assert front.stats()["fast"] == fast + 1


def test_a_search_before_the_messages_are_filled_is_answered_by_python_the_same(tmp_path):
    """Until its hit's message is in the table, the fast path passes a search through."""
    with _warm_fast_path(tmp_path, 3) as (s, videos):
        front, vid = s.srv.front, min(videos)
        front.messages.remove(vid)  # as before the fill reached it
        forwarded = front.stats()["forwarded"]
        assert s.top(videos[vid][0]) == f"collections/c/videos/{vid}"
        assert front.stats()["forwarded"] == forwarded + 1


def test_the_message_fill_takes_out_a_video_deleted_while_it_ran(tmp_path, monkeypatch):
    """A delete that lands between the fill's read of the videos and its put of one message: the
    fill sees the video gone after its put and removes the message again (no stale entry)."""
    videos = _fill(tmp_path, 4)
    s = _Server(tmp_path, "native")
    try:
        s.srv.warmer.join(120)
        storage, front = s.srv.service.storage, s.srv.front
        stale = storage.video_entries()  # what the fill had read before the delete
        gone = min(videos)
        s.stub.DeleteVideo(pb.DeleteVideoRequest(name=f"collections/c/videos/{gone}"))
        assert len(front.messages) == len(videos) - 1
        monkeypatch.setattr(storage, "video_entries", lambda: stale)
        assert front.fill_messages() == len(videos)
        assert len(front.messages) == len(videos) - 1
        with pytest.raises(grpc.RpcError) as e:
            s.stub.GetVideo(pb.GetVideoRequest(name=f"collections/c/videos/{gone}"))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        s.close()
