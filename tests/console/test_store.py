"""The console's thumbnails and originals follow the real storage's commits (EmbeddedStorage
observer): kept at the add that makes a video searchable, deleted at the delete's commit."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from frameseek.console.store import ConsoleMedia
from frameseek.storage import EmbeddedStorage, JobRecord, JobState, VideoRecord

COLOURS = {0.0: (255, 0, 0), 1.0: (0, 255, 0), 2.0: (0, 0, 255)}


@pytest.fixture
def store(tmp_path):
    storage = EmbeddedStorage(str(tmp_path))
    storage.open()
    coll = storage.create_collection("thumbs", model="m", dimension=4, metric="ip", sampling={}, index={})
    media = ConsoleMedia(str(tmp_path), thumbnail_width=32, keep_originals=True)
    storage.add_observer(media)
    yield storage, coll, media
    storage.close()


def _ingest(storage, coll, media, tmp_path, sha: str, kept: list[float]) -> VideoRecord:
    spool = tmp_path / f"{sha}.media"
    spool.write_bytes(b"the upload " + sha.encode())
    frames = media.ingest_frames(
        JobRecord(id=f"job-{sha}", collection_id=coll.id, state=JobState.RUNNING), coll.id, sha, str(spool)
    )
    for t, rgb in COLOURS.items():  # what the decode thread hands over: every sample, as decoded
        frames(t, np.full((48, 64, 3), rgb, np.uint8))
    vectors = np.eye(4, dtype=np.float32)[: len(kept)]
    rec = VideoRecord(
        id=0,
        collection_id=coll.id,
        kind="video",
        duration=3.0,
        width=64,
        height=48,
        sample_count=len(kept),
        size_bytes=10,
        content_sha256=sha,
        filename="a.webm",
    )
    return storage.add_video(coll.id, rec, np.asarray(kept), vectors)


def test_thumbnails_and_original_are_kept_at_the_add_and_go_with_the_delete(tmp_path, store):
    storage, coll, media = store
    v = _ingest(storage, coll, media, tmp_path, "sha-a", kept=[0.0, 2.0])  # the sample at 1 s was a near-duplicate
    thumbs = media.thumbnails(v.id)
    assert thumbs.timestamps == [0.0, 2.0] and thumbs.filename == "a.webm"
    assert thumbs.nearest(1.2) == 1 and thumbs.nearest(0.9) == 0 and thumbs.nearest(99) == 1
    im = Image.open(io.BytesIO(thumbs.jpeg(1)))
    assert im.size == (32, 24) and np.abs(np.asarray(im.convert("RGB"), int) - (0, 0, 255)).max() < 8
    original = media.original(v.id)
    assert os.path.samefile(original, tmp_path / "sha-a.media")  # a hard link, not a copy
    assert os.listdir(tmp_path / "console" / "incoming") == []
    after_restart = ConsoleMedia(str(tmp_path), thumbnail_width=32, keep_originals=True)
    assert after_restart.thumbnails(v.id).timestamps == [0.0, 2.0] and after_restart.original(v.id)

    storage.delete_video(v.id)
    assert media.thumbnails(v.id) is None and media.original(v.id) is None
    assert not os.path.exists(thumbs.folder)


def test_a_collection_delete_removes_its_videos_media(tmp_path, store):
    storage, coll, media = store
    v = _ingest(storage, coll, media, tmp_path, "sha-b", kept=[0.0, 1.0, 2.0])
    folder = media.thumbnails(v.id).folder
    storage.delete_collection(coll.name, force=True)
    assert not os.path.exists(folder) and media.thumbnails(v.id) is None


def test_an_ingest_that_ends_without_a_video_leaves_nothing(tmp_path, store):
    storage, coll, media = store
    spool = tmp_path / "c.media"
    spool.write_bytes(b"x")
    frames = media.ingest_frames(
        JobRecord(id="job-c", collection_id=coll.id, state=JobState.RUNNING), coll.id, "sha-c", str(spool)
    )
    frames(0.0, np.zeros((48, 64, 3), np.uint8))
    assert os.listdir(tmp_path / "console" / "incoming") == ["job-c"]
    media.ingest_ended((coll.id, "sha-c"), frames)  # the job failed (WatchIngestJob said so)
    assert os.listdir(tmp_path / "console" / "incoming") == []
    assert not list((tmp_path / "console").glob("c*/*"))


def test_a_restart_sweeps_what_a_crash_left_incoming(tmp_path):
    stale = tmp_path / "console" / "incoming" / "job-dead"
    stale.mkdir(parents=True)
    (stale / "thumbs.pack").write_bytes(b"partial")
    ConsoleMedia(str(tmp_path), thumbnail_width=32, keep_originals=True)
    assert not stale.exists()
