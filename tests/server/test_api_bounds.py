"""Bounds of the API layer (issue 17, items 5, 6 and 8), through a real server process:

- bad input is INVALID_ARGUMENT, never INTERNAL, and never resolves to something else (a video
  id in Arabic-Indic digits is not video 1); error texts quote inputs cut short and never name
  the server's own paths;
- uploads are bounded: admission counts an upload from its first message, an idle upload is cut
  off, one client cannot hold every upload slot;
- spool files do not outlive their calls, nor a killed process.
"""

from __future__ import annotations

import base64
import threading
import time

import grpc
import numpy as np
import pytest

from frameseek.client import FrameSeekError
from frameseek.v1 import frameseek_pb2 as pb

from .helpers import ServerProcess, make_video, needs_index, needs_media, seed_collection

pytestmark = needs_index
DIM = 16


def _data_dir(path):
    """A data dir with collection 'vecs' holding videos 1..3 (so that a name that wrongly
    resolves to video 1 finds something)."""
    seed_collection(path, dim=DIM, videos=3, samples=4, seed=3, key=None)
    return path


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    server = ServerProcess(_data_dir(tmp_path_factory.mktemp("bounds") / "data"), ingest_path_root=root).start()
    server.root = root
    yield server
    assert server.stop() == 0, server.log()


def _error(call) -> FrameSeekError:
    with pytest.raises((FrameSeekError, grpc.RpcError)) as ei:
        call()
    e = ei.value
    return e if isinstance(e, FrameSeekError) else FrameSeekError.from_rpc(e)


def _stream(stub_method, messages, timeout=60):
    return lambda: stub_method(iter(messages), timeout=timeout)


@pytest.mark.parametrize("vid", ["١", "²", "9" * 23, "1 ", "-1", "0x1"])
def test_video_ids_are_ascii_decimal_and_in_range(srv, vid):
    with srv.client() as fs:
        assert fs.get_video("collections/vecs/videos/1").name == "collections/vecs/videos/1"
        e = _error(lambda: fs.get_video(f"collections/vecs/videos/{vid}"))
        assert (e.code, e.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"), e
        e = _error(lambda: fs.delete_video(f"collections/vecs/videos/{vid}"))
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT, e
        e = _error(
            lambda: fs.search_by_vector(np.ones(DIM), collection="vecs", videos=[f"collections/vecs/videos/{vid}"])
        )
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT, e


def test_a_page_token_with_a_non_numeric_position_is_invalid_argument(srv):
    token = base64.urlsafe_b64encode(b"v:abc").decode()
    with srv.client() as fs:
        e = _error(
            lambda: fs._call(fs.stub.ListVideos, pb.ListVideosRequest(parent="collections/vecs", page_token=token))
        )
        assert (e.code, e.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"), e


def test_an_unknown_metric_is_refused_not_stored_as_cosine(srv):
    with srv.client() as fs:
        req = pb.CreateCollectionRequest(collection_id="metric-99", collection=pb.Collection(metric=99))
        e = _error(lambda: fs._call(fs.stub.CreateCollection, req))
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT, e
        assert _error(lambda: fs.get_collection("metric-99")).code == grpc.StatusCode.NOT_FOUND


def test_negative_size_bytes_is_invalid_argument(srv):
    with srv.client() as fs:
        meta = pb.IngestMetadata(parent="collections/vecs", size_bytes=-1)
        e = _error(_stream(fs.stub.IngestVideo, [pb.IngestVideoRequest(metadata=meta)]))
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT, e


def test_a_server_path_with_a_nul_character_is_invalid_argument(srv):
    with srv.client() as fs:
        meta = pb.IngestMetadata(server_path="a\0b.mp4")
        e = _error(_stream(fs.stub.IngestVideo, [pb.IngestVideoRequest(metadata=meta)]))
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT, e
        q = pb.VideoQuery(server_path="a\0b.mp4")
        e = _error(_stream(fs.stub.SearchByVideo, [pb.SearchByVideoRequest(query=q)]))
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT, e


def test_query_media_is_either_uploaded_or_a_server_path_and_never_empty(srv):
    """SearchByVideo and SearchByAudio take their media the same way: an empty upload is
    EMPTY_MEDIA, chunks after a server_path are refused, and a query file leaves no spool behind."""
    spool = srv.data_dir / "uploads"
    before = sorted(spool.iterdir()) if spool.exists() else []
    with srv.client() as fs:
        for method, request, query in (
            (fs.stub.SearchByVideo, pb.SearchByVideoRequest, pb.VideoQuery),
            (fs.stub.SearchByAudio, pb.SearchByAudioRequest, pb.AudioQuery),
        ):
            e = _error(_stream(method, [request(query=query(parent="collections/vecs"))]))
            assert (e.code, e.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_MEDIA"), e
            (srv.root / "q.bin").write_bytes(b"x")
            follow = [request(query=query(parent="collections/vecs", server_path="q.bin")), request(chunk=b"x")]
            e = _error(_stream(method, follow))
            assert e.code == grpc.StatusCode.INVALID_ARGUMENT and "server_path" in e.message, e
    assert (sorted(spool.iterdir()) if spool.exists() else []) == before


def test_error_texts_quote_long_inputs_cut_short(srv):
    long_name = "collections/vecs/videos/" + "x" * 9000
    with srv.client() as fs:
        for call in (
            lambda: fs.get_video(long_name),
            lambda: fs.get_collection("c" * 9000 + "/x"),
            lambda: fs.create_collection("Z" * 9000),
        ):
            e = _error(call)
            assert e.code == grpc.StatusCode.INVALID_ARGUMENT, e
            assert len(e.message) < 300, e.message


@needs_media
def test_media_errors_do_not_reveal_server_paths(srv):
    with srv.client(timeout=120) as fs:
        e = _error(
            lambda: fs.ingest_video(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 4000, collection="", filename="mine.mp4")
        )
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT, e
        assert str(srv.data_dir) not in e.message and "uploads" not in e.message, e.message
        (srv.root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 4000)
        e = _error(lambda: fs.ingest_video(server_path="broken.mp4"))
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT, e
        assert str(srv.root) not in e.message, e.message


@needs_media
def test_search_by_video_refuses_a_nan_min_score(srv, tmp_path):
    clip = make_video(tmp_path / "q.mp4", seconds=2, seed=5)
    with srv.client(timeout=300) as fs:
        e = _error(lambda: fs.search_by_video(clip, min_score=float("nan")))
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT and "min_score" in e.message, e


@needs_media
def test_ingest_image_refuses_a_video_from_its_first_bytes(tmp_path):
    """A 4 s video sent to IngestImage on a server that decodes at most 1 s of video: refused as a
    video (INVALID_ARGUMENT) from its bytes, not after decoding (which would fail on the limit)."""
    video = make_video(tmp_path / "v.mp4", seconds=4, seed=9)
    srv = ServerProcess(tmp_path / "data", media__max_duration_s=1).start()
    try:
        with srv.client(timeout=300) as fs:
            e = _error(lambda: fs.ingest_image(video))
            assert e.code == grpc.StatusCode.INVALID_ARGUMENT and "IngestVideo" in e.message, e
            e = _error(lambda: fs.ingest_video(video))  # the same bytes as a video meet the limit
            assert (e.code, e.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "DURATION_TOO_LONG"), e
    finally:
        assert srv.stop() == 0, srv.log()


# -- uploads: bounded, and no spool file outlives its call -------------------------------------------


class _StalledUpload:
    """An IngestVideo stream that sends its metadata and one chunk, then nothing until released."""

    def __init__(self, fs, collection="collections/vecs"):
        self.release = threading.Event()
        meta = pb.IngestMetadata(parent=collection)

        def messages():
            yield pb.IngestVideoRequest(metadata=meta)
            yield pb.IngestVideoRequest(chunk=b"\x00" * 1000)
            self.release.wait(60)

        self.future = fs.stub.IngestVideo.future(messages(), timeout=120)

    def end(self):
        self.release.set()
        try:
            self.future.result()
        except grpc.RpcError:
            pass


def _wait_for(predicate, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


def test_uploads_count_against_the_limit_from_their_first_message(tmp_path):
    srv = ServerProcess(_data_dir(tmp_path / "data"), max_pending_ingests=2).start()
    stalled = []
    try:
        with srv.client() as fs:
            stalled = [_StalledUpload(fs), _StalledUpload(fs)]
            _wait_for(lambda: fs.stats().active_ingests == 2, "both uploads admitted")
            e = _error(
                _stream(
                    fs.stub.IngestVideo,
                    [pb.IngestVideoRequest(metadata=pb.IngestMetadata()), pb.IngestVideoRequest(chunk=b"x")],
                )
            )
            assert (e.code, e.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_REQUESTS"), e
            for s in stalled:
                s.end()
            _wait_for(lambda: fs.stats().active_ingests == 0, "slots released when the uploads end")
    finally:
        for s in stalled:
            s.release.set()
        assert srv.stop() == 0, srv.log()


def test_an_idle_upload_is_cut_off_and_its_spool_file_removed(tmp_path):
    srv = ServerProcess(_data_dir(tmp_path / "data"), upload_idle_timeout_s=1).start()
    upload = None
    try:
        with srv.client() as fs:
            upload = _StalledUpload(fs)
            with pytest.raises(grpc.RpcError) as ei:
                upload.future.result()
            e = FrameSeekError.from_rpc(ei.value)
            assert (e.code, e.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPLOAD_IDLE"), e
            assert list((srv.data_dir / "uploads").glob("*.part")) == []
            assert fs.stats().active_ingests == 0
    finally:
        if upload is not None:
            upload.release.set()
        assert srv.stop() == 0, srv.log()


@pytest.mark.parametrize("front_end", ["native", "python"])
def test_one_client_cannot_hold_every_upload_slot(tmp_path, front_end):
    # the native front end passes calls through a private socket and names their client
    # (x-frameseek-peer; a client's own value of it is dropped)
    srv = ServerProcess(_data_dir(tmp_path / "data"), front_end=front_end, max_uploads_per_client=1).start()
    upload = None
    try:
        with srv.client() as fs:
            upload = _StalledUpload(fs)
            _wait_for(lambda: fs.stats().active_ingests == 1, "the first upload admitted")
            e = _error(
                _stream(
                    fs.stub.IngestVideo,
                    [pb.IngestVideoRequest(metadata=pb.IngestMetadata()), pb.IngestVideoRequest(chunk=b"x")],
                )
            )
            assert (e.code, e.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_REQUESTS"), e
            assert e.metadata["scope"] == "client", e
            upload.end()
            e = _error(
                _stream(
                    fs.stub.IngestVideo,
                    [pb.IngestVideoRequest(metadata=pb.IngestMetadata()), pb.IngestVideoRequest(chunk=b"x")],
                )
            )
            assert e.code != grpc.StatusCode.RESOURCE_EXHAUSTED, e  # the slot came back (the bytes are no media)
    finally:
        if upload is not None:
            upload.release.set()
        assert srv.stop() == 0, srv.log()


@pytest.mark.parametrize("front_end", ["native", "python"])
def test_a_cancelled_upload_leaves_no_spool_file(tmp_path, front_end):
    srv = ServerProcess(_data_dir(tmp_path / "data"), front_end=front_end, upload_idle_timeout_s=600).start()
    upload = None
    try:
        with srv.client() as fs:
            upload = _StalledUpload(fs)
            spool = srv.data_dir / "uploads"
            _wait_for(lambda: list(spool.glob("*.part")), "the upload is being spooled")
            upload.future.cancel()
            _wait_for(lambda: not list(spool.glob("*.part")), "the spool file is removed after the cancel")
            _wait_for(lambda: fs.stats().active_ingests == 0, "the slot is released after the cancel")
    finally:
        if upload is not None:
            upload.release.set()
        assert srv.stop() == 0, srv.log()


def test_spool_files_of_a_killed_server_are_removed_at_start(tmp_path):
    data = _data_dir(tmp_path / "data")
    (data / "uploads").mkdir(exist_ok=True)
    (data / "uploads" / "0123abcd.part").write_bytes(b"half an upload")
    srv = ServerProcess(data).start()
    try:
        assert list((data / "uploads").glob("*.part")) == []
    finally:
        assert srv.stop() == 0, srv.log()
