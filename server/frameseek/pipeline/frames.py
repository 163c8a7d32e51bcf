"""Video / image -> timestamped, L2-normalised embeddings: one vector set per requested view.

    decode thread:   demux + decode -> time-grid sampling -> RGB at the model's input size
                     (one swscale pass) -> blank filter -> resize (only what did not arrive sized)
                        |  bounded queue (back-pressure: at most `queue_size` resized frames)
    calling thread:  batch -> model -> optional near-duplicate drop -> progress callback

Decoding and inference overlap (PyAV, PIL and ONNX Runtime release the GIL), memory stays bounded
whatever the file's length (a 2-hour 1080p file holds at most `queue_size` small frames plus one
decoded frame in flight), and the calling thread watches the cancel event and the decode
timeouts, so a broken or hostile input never hangs the caller.

What is embedded of each kept frame is declared, not coded: `SamplingSettings.views` lists the
views (`frameseek.pipeline.views.View`: whole, mirrored, coarse, blurred, cropped ...), and the
result holds one vector set per view name (`EmbeddedMedia.sets`). A caller that needs one vector
per frame asks for one view and pays one model pass per frame.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from ..config import SAMPLING, VIEWS
from ..embed import Embedder
from ..media import (
    BlankFilterSettings,
    Frame,
    MediaCancelled,
    MediaError,
    MediaErrorReason,
    MediaLimits,
    TimeGridSampler,
    analyse,
    backend_for_consumer,
    open_decoder,
)
from ..media.decode import Backend
from ..regions import REGION_MODES, Box, InsetDetector, InsetSettings, gray_for_analysis, region_boxes
from .views import FULL_VIEW, View, index_views, query_views, region_views

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, "int | None"], None]
SampleCallback = Callable[[float, np.ndarray], None]  # on_sample(t, rgb) of embed_media

#: Default sampling rates (declared with the server's settings, config.SamplingConfig: references
#: are indexed denser than queries are sampled, so that the two grids stay in phase).
REFERENCE_FPS = SAMPLING.default_fps
QUERY_FPS = SAMPLING.query_fps
#: Input scale of the coarse query views (`views.query_views`; config.ViewsConfig.query_coarse_scale).
#: Copies degraded to little signal -- downscaled to 80x60, re-encoded at 32 kb/s or crushed into
#: blocks by x264 at CRF 45+ -- match their source up to twice as far above the vote floor there,
#: while clean copies match best at full scale; the query votes with whichever view matches
#: (README "Copy detection", benchmarks/copydetect).
QUERY_COARSE_SCALE = VIEWS.query_coarse_scale
#: Input scale of the references' coarse twins (config.ViewsConfig.index_coarse_scale): every
#: indexed sample is embedded a second time at this scale and indexed beside its full-size vector,
#: so the coarse query view meets coarse references. Crushed copies match their source far better
#: coarse to coarse than coarse to full (x264 CRF 51, seed 7: median 0.29 -> 0.44 on one clip,
#: while the best unrelated reference goes 0.25 -> 0.16); benchmarks/README.md "coarse twins".
INDEX_COARSE_SCALE = VIEWS.index_coarse_scale
#: How long the inference stage waits for more frames to fill a batch, unless the embedder says
#: otherwise (`batch_wait_s`: ONNX Runtime on the CPU sets 0, its cost per frame does not depend
#: on the batch size).
BATCH_WAIT_S = 0.05


@dataclass
class SamplingSettings:
    """How a video is sampled before embedding."""

    fps: float = QUERY_FPS  # samples per second of presentation time; <= 0: every frame
    # At most this many grid ticks: a clip whose container states a duration longer than
    # max_samples / fps gets a sparser grid spread over all of it (grid_fps). Bounds the embedding
    # cost of a long query clip; None = no bound. Without a stated duration the grid stays at fps.
    max_samples: int | None = None
    drop_blank: bool = True  # drop near-black / uniform / featureless frames (they never vote)
    dedup_threshold: float | None = None  # drop a sample whose cosine to the last kept one is >= this
    keyframes_only: bool = False  # decode key frames only (fast path; the grid is then as sparse as the GOP)
    # What is embedded of every kept frame, one vector set each (EmbeddedMedia.sets); the first is
    # the primary view (EmbeddedMedia.vectors, the one near-duplicate dropping compares). A view
    # the embedder cannot take (a coarse one on a fixed input shape; a blur or crop of a frame
    # that stays on the GPU) is skipped with a log line and has no set.
    views: tuple[View, ...] = (FULL_VIEW,)
    # Query regions (frameseek.regions): "off"; "auto" = detect a picture-in-picture inset over the
    # sampled frames and, when there is one, embed its crop of every kept frame too; "on" = the
    # inset (if any) plus a fixed grid of 5 crops. The crops are taken in a second decode pass,
    # so memory stays bounded; it only runs when there is a region to embed.
    regions: str = "off"
    inset: InsetSettings = field(default_factory=InsetSettings)
    blank: BlankFilterSettings = field(default_factory=BlankFilterSettings)
    decoder: Backend = "auto"
    queue_size: int = 32  # resized frames buffered between decode and inference
    # Frames reach `on_sample` with a short side of at least this many pixels (when the source has
    # them): the face modality detects on them, and the model's input size (~288 px) would shrink
    # a face of 80 px at 720p below what a detector finds. None = at the model's input size.
    sample_short_side: int | None = None

    def __post_init__(self) -> None:
        if self.dedup_threshold is not None and not -1.0 <= self.dedup_threshold <= 1.0:
            raise ValueError("dedup_threshold is a cosine similarity in [-1, 1]")
        if self.queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if self.regions not in REGION_MODES:
            raise ValueError(f"regions must be one of {REGION_MODES}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError("max_samples must be None or >= 1")
        self.views = tuple(self.views)
        if not self.views:
            raise ValueError("views must name at least one view")
        names = [v.name for v in self.views]
        if len(set(names)) != len(names):
            raise ValueError(f"view names must be distinct: {names}")
        if any(n.startswith("region") for n in names):
            raise ValueError("view names starting with 'region' are the query regions' (regions=...)")

    def grid_fps(self, duration: float | None) -> float:
        """The sampling rate for a clip of `duration` seconds: `fps`, lowered to max_samples /
        duration when the grid would have more ticks than max_samples (ticks k / rate < duration,
        k = 0 .. max_samples - 1)."""
        if self.max_samples and self.fps and self.fps > 0 and duration and duration * self.fps > self.max_samples:
            return self.max_samples / duration
        return self.fps

    @classmethod
    def reference(cls, **kw: Any) -> SamplingSettings:
        """Defaults for videos being indexed (denser grid; the frame and its coarse twin)."""
        return cls(fps=kw.pop("fps", REFERENCE_FPS), views=kw.pop("views", index_views()), **kw)

    @classmethod
    def query(cls, **kw: Any) -> SamplingSettings:
        """Defaults for query clips (1 fps; whole, mirrored, coarse views: `views.query_views`)."""
        return cls(fps=kw.pop("fps", QUERY_FPS), views=kw.pop("views", query_views()), **kw)


@dataclass
class EmbeddedMedia:
    """The embeddings of one video or image: one vector set per view, rows aligned with `timestamps`."""

    timestamps: np.ndarray  # float64[n], seconds from the stream start
    # view name -> float32[n, dim], L2-normalised: the requested views that the embedder could
    # take, in SamplingSettings.views order (the primary view first), then the query regions'
    # crops ("region0", "region1" ..., one per entry of `regions`)
    sets: dict[str, np.ndarray]
    duration: float  # seconds (0 for still images)
    width: int
    height: int
    is_image: bool
    decoder: str  # "pyav" | "nvdec" | "pil"
    embedder: str  # "<model>@<backend>"
    stats: dict[str, Any]  # timings (s) and counters
    codec: str = ""
    source_fps: float | None = None
    sample_fps: float | None = None  # the sampling grid's rate (SamplingSettings.grid_fps); None: every frame
    dropped_blank: int = 0
    dropped_duplicates: int = 0
    # SamplingSettings.regions: the embedded regions, (kind, normalised box); kind "inset"
    # (detected) or "grid" (fixed); region j's vectors are sets[f"region{j}"]
    regions: list[tuple[str, Box]] = field(default_factory=list)

    @property
    def vectors(self) -> np.ndarray:
        """The primary view's vectors (SamplingSettings.views[0], the whole frame by default)."""
        return next(iter(self.sets.values()))

    @property
    def views(self) -> list[np.ndarray]:
        """Every vector set, primary first, in the order their kNN results sit side by side
        (`frameseek.matching.search_views`)."""
        return list(self.sets.values())

    @property
    def region_vectors(self) -> list[np.ndarray]:
        """The query regions' vector sets, in the order of `regions`."""
        return [self.sets[f"region{j}"] for j in range(len(self.regions))]

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])


_DONE = object()


@dataclass
class _Item:
    t: float
    inputs: dict[str, Any]  # view name -> model input (numpy or CUDA tensor)


def _blank_verdict(frame: Frame, settings: BlankFilterSettings):
    img = frame.image
    if frame.on_gpu:  # analyse a small host copy; the frame itself stays on the GPU
        step = max(1, max(frame.shape) // settings.analysis_size)
        img = img[::step, ::step].cpu().numpy()
    return analyse(img, settings)


def _analysis_gray(frame: Frame, size: int) -> np.ndarray:
    img = frame.image
    if frame.on_gpu:  # a small strided host copy is plenty for straight-edge statistics
        step = max(1, max(frame.shape) // size)
        img = img[::step, ::step].cpu().numpy() if hasattr(img, "cpu") else img[::step, ::step].get()
    return gray_for_analysis(img, size)


def _reopen(source: Any) -> Any | None:
    """`source` positioned at its start for a second pass, or None when it cannot be re-read."""
    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        return source
    seek = getattr(source, "seek", None)
    seekable = getattr(source, "seekable", None)
    if seek is not None and (seekable is None or seekable()):
        try:
            seek(0)
            return source
        except (OSError, ValueError):
            return None
    return None


def _embed_regions(
    source: Any,
    embedder: Embedder,
    sampling: SamplingSettings,
    sample_fps: float | None,
    limits: MediaLimits,
    cancel: threading.Event | None,
    times: list[float],
    fallback: np.ndarray,
    crops: tuple[View, ...],
    t_start: float,
) -> list[np.ndarray]:
    """Second decode pass: embed the `crops` views of the frames kept by the first pass (matched
    by presentation time on the same sampling grid). A frame the second pass does not meet (it
    should not happen: decoding is deterministic) keeps its whole-frame vector."""
    row = {round(t, 6): i for i, t in enumerate(times)}
    out = [fallback.copy() for _ in crops]
    decoder = _open_guarded(source, limits, sampling.decoder, cancel, _cuda_device(embedder))
    abort = threading.Event()
    batch_size = max(1, int(getattr(embedder, "batch_size", 16)))
    pending_rows: list[int] = []
    pending: list[list[Any]] = [[] for _ in crops]

    def flush() -> None:
        for j in range(len(crops)):
            v = embedder.embed_preprocessed(pending[j])
            out[j][pending_rows] = v
            pending[j].clear()
        pending_rows.clear()

    try:
        for frame in decoder.frames(TimeGridSampler(sample_fps), sampling.keyframes_only, abort):
            if cancel is not None and cancel.is_set():
                raise MediaCancelled()
            if limits.decode_timeout_s is not None and time.perf_counter() - t_start > limits.decode_timeout_s:
                raise MediaError(
                    MediaErrorReason.DECODE_TIMEOUT, f"decoding took longer than {limits.decode_timeout_s:g} s"
                )
            i = row.pop(round(frame.t, 6), None)
            if i is None:
                continue  # blank or near-duplicate in the first pass
            pixels = frame.to_numpy() if frame.on_gpu else frame.image
            for j, view in enumerate(crops):
                pending[j].append(view.apply(pixels, embedder))
            pending_rows.append(i)
            if len(pending_rows) >= batch_size:
                flush()
            if not row:
                break
        if pending_rows:
            flush()
    finally:
        abort.set()
        decoder.close()
    return out


def _cuda_device(embedder: Any) -> int | None:
    """The CUDA device whose tensors the embedder takes as they are (None: it runs on the CPU)."""
    return getattr(embedder, "cuda_device", None)


def _open_guarded(
    source, limits: MediaLimits, backend: Backend, cancel: threading.Event | None, cuda_device: int | None = None
):
    """open_decoder() on a helper thread: probing reads the input, and a stream that stops
    delivering bytes must not hang the caller (DECODE_TIMEOUT after `stall_timeout_s`). Frames
    for an embedder on `cuda_device` may be decoded there (NVDEC); for one on the CPU they are
    decoded on the CPU unless `backend` says otherwise."""
    backend, gpu_id = backend_for_consumer(backend, cuda_device)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["decoder"] = open_decoder(source, limits, backend, gpu_id)
        except BaseException as exc:
            box["error"] = exc

    th = threading.Thread(target=target, name="frameseek-open", daemon=True)
    th.start()
    deadline = time.perf_counter() + limits.stall_timeout_s
    while th.is_alive():
        th.join(0.02)
        if not th.is_alive():
            break
        if cancel is not None and cancel.is_set():
            raise MediaCancelled()
        if time.perf_counter() > deadline:
            raise MediaError(
                MediaErrorReason.DECODE_TIMEOUT, f"opening the input took longer than {limits.stall_timeout_s:g} s"
            )
    if "error" in box:
        raise box["error"]
    return box["decoder"]


def _at_least(hint, short_side: int | None):
    """The decoder's size hint, raised so that a frame's short side is at least `short_side`
    (never above the source's own size: decoders do not upscale with a hint)."""
    if short_side is None:
        return hint

    def sized(height: int, width: int) -> tuple[int, int]:
        oh, ow = hint(height, width) if hint is not None else (height, width)
        if min(oh, ow) >= short_side:
            return oh, ow
        f = min(1.0, short_side / min(height, width))
        return max(1, round(height * f)), max(1, round(width * f))

    return sized


def embed_media(
    source: str | os.PathLike | bytes | BinaryIO,
    embedder: Embedder,
    sampling: SamplingSettings | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    limits: MediaLimits | None = None,
    on_sample: SampleCallback | None = None,
) -> EmbeddedMedia:
    """Decode, sample, filter and embed `source`: one vector set per view of `sampling.views` (and
    per query region). Raises `MediaError` (reason CANCELLED when `cancel` is set, DECODE_TIMEOUT
    when decoding stalls or exceeds the limits). `on_sample(t, rgb)`
    sees, on the decode thread, every sample that goes on to be embedded (blank frames are not
    passed; near-duplicates dropped by `dedup_threshold` are), as RGB uint8 HxWx3 as decoded
    (already downscaled towards the model's input size): thumbnails without a second decode."""
    sampling = sampling or SamplingSettings()
    limits = limits or MediaLimits()
    t_start = time.perf_counter()
    decoder = _open_guarded(source, limits, sampling.decoder, cancel, _cuda_device(embedder))
    info = decoder.info
    sample_fps = sampling.grid_fps(info.duration) if not info.is_image else sampling.fps
    sampler = TimeGridSampler(sample_fps)
    estimated = 1 if info.is_image else sampler.expected_samples(info.duration)
    if sampling.keyframes_only:
        estimated = None  # unknown GOP structure

    q: queue.Queue = queue.Queue(maxsize=sampling.queue_size)
    abort = threading.Event()
    timings = {"decode_s": 0.0, "preprocess_s": 0.0, "embed_s": 0.0}
    counters = {"blank": 0, "blank_reasons": {}}

    def put(item: Any) -> bool:
        while not abort.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    gpu_input = _cuda_device(embedder) is not None  # takes CUDA tensors as they are
    detector = InsetDetector(sampling.inset) if sampling.regions != "off" else None
    # The model's input size, so the decoder can downscale while converting to RGB (one swscale
    # pass instead of a full-size conversion plus a PIL resize on this thread).
    size_hint = _at_least(getattr(embedder, "input_size", None), sampling.sample_short_side)
    views: list[View] = []
    for view in sampling.views:
        why = view.unavailable(embedder, gpu_input and decoder.name == "nvdec")  # frames that stay on the GPU
        if why is None:
            views.append(view)
        elif view is sampling.views[0]:
            raise ValueError(f"the primary view {view.name!r} cannot be embedded: {why}")
        else:
            log.info("view %r skipped: %s", view.name, why)

    def produce() -> None:
        try:
            it = decoder.frames(sampler, sampling.keyframes_only, abort, size_hint=size_hint)
            while True:
                t0 = time.perf_counter()
                frame = next(it, None)
                t1 = time.perf_counter()
                timings["decode_s"] += t1 - t0
                if frame is None:
                    break
                if sampling.drop_blank:
                    verdict = _blank_verdict(frame, sampling.blank)
                    if verdict.blank:
                        counters["blank"] += 1
                        counters["blank_reasons"][verdict.reason] = counters["blank_reasons"].get(verdict.reason, 0) + 1
                        timings["preprocess_s"] += time.perf_counter() - t1
                        continue
                if detector is not None:
                    t2 = time.perf_counter()
                    detector.update(_analysis_gray(frame, sampling.inset.analysis_size))
                    timings["regions_s"] = timings.get("regions_s", 0.0) + time.perf_counter() - t2
                pixels = frame.image
                if frame.on_gpu and not gpu_input:
                    pixels = frame.to_numpy()  # NVDEC decoded, but the embedder runs on the CPU
                if on_sample is not None:
                    on_sample(frame.t, frame.to_numpy() if frame.on_gpu and gpu_input else pixels)
                item = _Item(frame.t, {view.name: view.apply(pixels, embedder) for view in views})
                timings["preprocess_s"] += time.perf_counter() - t1
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the calling thread, which raises it
            put(exc)

    worker = threading.Thread(target=produce, name="frameseek-decode", daemon=True)
    worker.start()

    times: list[float] = []
    rows: dict[str, list[np.ndarray]] = {view.name: [] for view in views}
    primary = views[0].name
    dropped_dup = 0
    last_kept: np.ndarray | None = None
    batch_size = max(1, int(getattr(embedder, "batch_size", 16)))
    batch_wait = float(getattr(embedder, "batch_wait_s", BATCH_WAIT_S))
    last_progress_t = time.perf_counter()
    last_decoded = -1
    finished = False
    try:
        while not finished:
            # Collect a batch: block for the first item, then take what is already waiting.
            batch: list[_Item] = []
            while not batch:
                if cancel is not None and cancel.is_set():
                    raise MediaCancelled()
                now = time.perf_counter()
                if limits.decode_timeout_s is not None and now - t_start > limits.decode_timeout_s:
                    raise MediaError(
                        MediaErrorReason.DECODE_TIMEOUT,
                        f"decoding took longer than {limits.decode_timeout_s:g} s",
                    )
                try:
                    item = q.get(timeout=0.05)
                except queue.Empty:
                    # Nothing to embed: is the decoder still making progress? (Time the producer
                    # spends blocked on a full queue is back-pressure, not a stall: checked here only.)
                    decoded = decoder.stats.decoded_frames
                    if decoded != last_decoded:
                        last_decoded, last_progress_t = decoded, time.perf_counter()
                    elif time.perf_counter() - last_progress_t > limits.stall_timeout_s:
                        raise MediaError(
                            MediaErrorReason.DECODE_TIMEOUT,
                            f"the decoder produced no frame for {limits.stall_timeout_s:g} s",
                        ) from None
                    continue
                last_progress_t = time.perf_counter()
                if item is _DONE:
                    finished = True
                    break
                if isinstance(item, BaseException):
                    raise item
                batch.append(item)
                # Fill the batch with what is waiting, and (where batching pays off, e.g. on a
                # GPU) with what arrives within `batch_wait`.
                deadline = time.perf_counter() + batch_wait
                while len(batch) < batch_size:
                    wait = deadline - time.perf_counter()
                    try:
                        item = q.get(timeout=wait) if wait > 0 else q.get_nowait()
                    except queue.Empty:
                        break
                    if item is _DONE:
                        finished = True
                        break
                    if isinstance(item, BaseException):
                        raise item
                    batch.append(item)
            if not batch:
                continue
            t0 = time.perf_counter()
            out = {name: embedder.embed_preprocessed([b.inputs[name] for b in batch]) for name in rows}
            timings["embed_s"] += time.perf_counter() - t0
            for i, b in enumerate(batch):
                v = out[primary][i]
                if sampling.dedup_threshold is not None and last_kept is not None:
                    if float(np.dot(v, last_kept)) >= sampling.dedup_threshold:
                        dropped_dup += 1
                        continue
                last_kept = v
                times.append(b.t)
                for name, kept in rows.items():
                    kept.append(out[name][i])
            if progress is not None:
                progress(len(times) + dropped_dup + counters["blank"], estimated)
    except BaseException:
        abort.set()
        raise
    finally:
        abort.set()
        # Unblock a producer waiting on a full queue, then let it notice `abort`.
        while True:
            try:
                q.get_nowait()
            except queue.Empty:
                break
        worker.join(timeout=1.0)
        decoder.close() if not worker.is_alive() else None

    st = decoder.stats
    dim = int(embedder.dim)
    sets = {name: _stack(kept, dim) for name, kept in rows.items()}
    regions: list[tuple[str, Box]] = []
    if detector is not None and times:
        t0 = time.perf_counter()
        inset = detector.detect()
        regions = region_boxes(sampling.regions, inset)
        again = _reopen(source) if regions else None
        if regions and again is None:
            log.info("query regions skipped: the source cannot be read twice")
            regions = []
        if regions:
            crops = region_views(regions)
            crop_sets = _embed_regions(
                again, embedder, sampling, sample_fps, limits, cancel, times, sets[primary], crops, t_start
            )
            sets.update((view.name, v) for view, v in zip(crops, crop_sets, strict=True))
        timings["regions_s"] = timings.get("regions_s", 0.0) + time.perf_counter() - t0
    if info.is_image:
        duration = 0.0
    elif st.last_t is not None and not sampling.keyframes_only:
        duration = st.last_t + (st.frame_period or (1.0 / info.fps if info.fps else 0.0))
    else:
        duration = max(info.duration or 0.0, st.last_t or 0.0)
    wall = time.perf_counter() - t_start
    stats = dict(
        timings,
        wall_s=wall,
        decoded_frames=st.decoded_frames,
        sampled_frames=st.sampled_frames,
        decode_errors=st.decode_errors,
        truncated=st.truncated,
        decoder_notes=dict(st.extra),  # e.g. why NVDEC handed the rest of a stream to the CPU
        blank_reasons=dict(counters["blank_reasons"]),
        realtime_factor=(duration / wall) if wall > 0 and duration > 0 else None,
    )
    return EmbeddedMedia(
        timestamps=np.asarray(times, np.float64),
        sets=sets,
        duration=float(duration),
        width=info.width,
        height=info.height,
        is_image=info.is_image,
        decoder=decoder.name,
        embedder=f"{embedder.name}@{embedder.backend}",
        stats=stats,
        codec=info.codec,
        source_fps=info.fps,
        sample_fps=sample_fps if sample_fps and sample_fps > 0 else None,
        dropped_blank=counters["blank"],
        dropped_duplicates=dropped_dup,
        regions=regions,
    )


def _stack(rows: list[np.ndarray], dim: int) -> np.ndarray:
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)


__all__ = [
    "EmbeddedMedia",
    "SamplingSettings",
    "embed_media",
    "REFERENCE_FPS",
    "QUERY_FPS",
    "QUERY_COARSE_SCALE",
    "INDEX_COARSE_SCALE",
]
