"""What the web console keeps of each video beside the index: small JPEG thumbnails of its samples
and (optionally) its original upload, so that a page can show any matched moment and play from it.

Layout under `<data_dir>/console/`:

    incoming/<job id>/             thumbnails of an ingest still running (thumbs.pack)
    c<collection id>/<video id>/   thumbs.pack   the JPEGs, back to back (one file, not thousands)
                                   thumbs.json   {"timestamps", "starts", "sizes"} (one per sample),
                                                 "filename" (the upload's name: its media type)
                                   original      the upload (a hard link to the spooled file)

How it stays in step with the index without a second decode or a second delete path:
  * `ingest_frames` is the service's per-ingest hook (service.ingest.Ingest.ingest_frames): it returns
    an `IngestFrames` whose `add(t, rgb)` the pipeline calls with every decoded sample (decode
    thread), which it shrinks and JPEG-encodes into incoming/<job id>/;
  * this object observes the storage (EmbeddedStorage.add_observer): `video_added` - called under
    the storage's lock at the commit that makes the video searchable - moves the job's folder to
    c<collection>/<video>/ with the manifest of the video's samples and links the original;
    `video_removed` / `collection_removed` delete them at the delete's commit;
  * an ingest that fails never reaches video_added: the console follows every ingest it hooks
    with WatchIngestJob (the public API) and drops the job's folder once the job ends without a
    video; at start-up whatever incoming/ still holds (a crash) is swept.
Thumbnails are best effort: a failure to write one is logged and never fails an ingest. A crash
between the index commit and the folder move leaves a video without thumbnails (pages show a
placeholder).
"""

from __future__ import annotations

import bisect
import io
import json
import os
import shutil
import threading
from dataclasses import dataclass

import numpy as np
import structlog
from PIL import Image

log = structlog.get_logger("frameseek.console")

PACK, MANIFEST, ORIGINAL = "thumbs.pack", "thumbs.json", "original"


@dataclass(frozen=True)
class Thumbnails:
    """One video's thumbnails: sample i's JPEG is sizes[i] bytes at starts[i] in the pack."""

    video_id: int
    folder: str
    timestamps: list[float]
    starts: list[int]
    sizes: list[int]
    filename: str

    def nearest(self, t: float) -> int:
        """Index of the sample closest to time t."""
        i = bisect.bisect_left(self.timestamps, t)
        if i == len(self.timestamps) or (i > 0 and t - self.timestamps[i - 1] <= self.timestamps[i] - t):
            i -= 1
        return max(i, 0)

    def jpeg(self, i: int) -> bytes:
        with open(os.path.join(self.folder, PACK), "rb") as f:
            f.seek(self.starts[i])
            return f.read(self.sizes[i])


class IngestFrames:
    """The thumbnails of one running ingest (see the module docstring)."""

    def __init__(self, folder: str, width: int, media_path: str, keep_original: bool):
        os.makedirs(folder, exist_ok=True)
        self.folder, self.width, self.media_path, self.keep_original = folder, width, media_path, keep_original
        self._pack = open(os.path.join(folder, PACK), "wb")
        self._times: list[float] = []
        self._offsets: list[int] = [0]
        self._lock = threading.Lock()  # add() runs on the decode thread, commit() on the ingest thread
        self._failed = False

    def __call__(self, t: float, rgb: np.ndarray) -> None:
        """embed_media's on_sample: one sampled frame, as decoded."""
        if self._failed:
            return
        try:
            im = Image.fromarray(rgb)
            if im.width > self.width:
                im = im.resize((self.width, max(1, round(im.height * self.width / im.width))), Image.BILINEAR)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=80)
            with self._lock:
                if self._pack.closed:
                    return
                self._pack.write(buf.getbuffer())
                self._times.append(float(t))
                self._offsets.append(self._offsets[-1] + buf.tell())
        except Exception as exc:  # e.g. a full disk: the ingest goes on without thumbnails
            self._failed = True
            log.warning("thumbnails_failed", folder=self.folder, error=f"{type(exc).__name__}: {exc}")

    def commit(self, target: str, sample_times: np.ndarray, filename: str) -> None:
        """Move to `target` (the video's folder) with a manifest of the video's own samples."""
        with self._lock:
            self._pack.close()
        if self._failed:
            return
        # near-duplicates dropped after embedding have a thumbnail but no sample: leave them out
        keep = np.isin(np.asarray(self._times), np.asarray(sample_times, np.float64))
        idx = np.flatnonzero(keep)
        manifest = {
            "timestamps": [self._times[i] for i in idx],
            "starts": [self._offsets[i] for i in idx],
            "sizes": [self._offsets[i + 1] - self._offsets[i] for i in idx],
            "filename": filename,
        }
        with open(os.path.join(self.folder, MANIFEST), "w") as f:
            json.dump(manifest, f)
        if self.keep_original and self.media_path:
            _link_or_copy(self.media_path, os.path.join(self.folder, ORIGINAL))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(self.folder, target)

    def discard(self) -> None:
        with self._lock:
            self._pack.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # the spooled upload lives in the same data dir: no copy
    except OSError:  # another file system (a server_path ingest): copy it aside, off the commit

        def copy() -> None:
            try:
                shutil.copyfile(src, dst + ".tmp")
                os.replace(dst + ".tmp", dst)
            except OSError as exc:
                log.warning("original_not_kept", path=src, error=str(exc))

        threading.Thread(target=copy, name="console-copy", daemon=True).start()


class ConsoleMedia:
    """Thumbnails and originals of every video (see the module docstring)."""

    def __init__(self, data_dir: str, thumbnail_width: int, keep_originals: bool):
        self.root = os.path.join(os.path.abspath(data_dir), "console")
        self.width, self.keep_originals = thumbnail_width, keep_originals
        self._incoming = os.path.join(self.root, "incoming")
        shutil.rmtree(self._incoming, ignore_errors=True)  # ingests that failed or died with a crash
        os.makedirs(self._incoming, exist_ok=True)
        self._pending: dict[tuple[int, str], IngestFrames] = {}  # (collection id, sha256) -> running ingest
        # follow_job(job id, ended): the console's WatchIngestJob follower, set once it can call the API
        self.follow_job = None
        self._collection_of: dict[int, int] = {}  # video id -> collection id (folders)
        for entry in os.scandir(self.root):
            if entry.is_dir() and entry.name.startswith("c") and entry.name[1:].isdigit():
                for v in os.scandir(entry.path):
                    if v.name.isdigit():
                        self._collection_of[int(v.name)] = int(entry.name[1:])
        self._cache: dict[int, Thumbnails] = {}

    # -- the service's ingest hook ---------------------------------------------------------------
    def ingest_frames(self, job, collection_id: int, sha256: str, media_path: str) -> IngestFrames:
        frames = IngestFrames(os.path.join(self._incoming, job.id), self.width, media_path, self.keep_originals)
        key = (collection_id, sha256)
        self._pending[key] = frames
        if self.follow_job is not None:
            self.follow_job(job.id, lambda: self.ingest_ended(key, frames))
        return frames

    def ingest_ended(self, key: tuple[int, str], frames: IngestFrames) -> None:
        """The job ended (or can no longer be followed): a folder not committed by now is dropped."""
        if self._pending.get(key) is frames:
            del self._pending[key]
        frames.discard()  # nothing is left there once committed

    # -- storage observer (called under the storage's lock: file renames only) ---------------------
    def collection_added(self, rec, index) -> None:
        pass

    def video_added(self, rec, timestamps: np.ndarray) -> None:
        frames = self._pending.pop((rec.collection_id, rec.content_sha256), None)
        if frames is None:
            return
        try:
            frames.commit(self._folder(rec.collection_id, rec.id), timestamps, rec.filename)
            self._collection_of[rec.id] = rec.collection_id
        except OSError as exc:
            log.warning("thumbnails_not_kept", video=rec.id, error=str(exc))

    def video_removed(self, video_id: int) -> None:
        cid = self._collection_of.pop(video_id, None)
        self._cache.pop(video_id, None)
        if cid is not None:
            shutil.rmtree(self._folder(cid, video_id), ignore_errors=True)

    def collection_removed(self, collection_id: int) -> None:
        for vid in [v for v, c in self._collection_of.items() if c == collection_id]:
            self._collection_of.pop(vid, None)
            self._cache.pop(vid, None)
        shutil.rmtree(os.path.join(self.root, f"c{collection_id}"), ignore_errors=True)

    # -- reads ------------------------------------------------------------------------------------
    def _folder(self, collection_id: int, video_id: int) -> str:
        return os.path.join(self.root, f"c{collection_id}", str(video_id))

    def thumbnails(self, video_id: int) -> Thumbnails | None:
        hit = self._cache.get(video_id)
        if hit is not None:
            return hit
        cid = self._collection_of.get(video_id)
        if cid is None:
            return None
        folder = self._folder(cid, video_id)
        try:
            with open(os.path.join(folder, MANIFEST)) as f:
                m = json.load(f)
        except (OSError, ValueError):
            return None
        thumbs = Thumbnails(video_id, folder, m["timestamps"], m["starts"], m["sizes"], m.get("filename", ""))
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[video_id] = thumbs
        return thumbs

    def original(self, video_id: int) -> str | None:
        cid = self._collection_of.get(video_id)
        path = self._folder(cid, video_id) + os.sep + ORIGINAL if cid is not None else None
        return path if path and os.path.exists(path) else None
