"""The recall the server knows (issue 22): each collection's measured recall, and the search breadth
(ef) tuned to meet the collection's `target_recall`.

Sampling. The one vector search (`_native.SearchDirectory.nearest_videos`: the native front end's
SearchByVector and the Python SearchByVector / SearchByImage alike) copies every
`Settings.recall.sample_every`-th unfiltered search of a collection into a small bounded queue
(native/src/search_directory.cpp, SearchSampler): the query as searched, k, min_score, the ef its
walk used and the videos it returned. Filtered searches are not sampled (a filter changes the exact
reference and is issue 22's separate "filtered search" point); SearchByVideo's per-frame kNN is
not sampled either (frame-level neighbours voted into clips, not a top-k of videos), but it walks
at the tuned breadth too (`ef_in_use`).

Measuring. A background thread (nice 19, and a token bucket of CPU seconds: at most
`cpu_share` of one core over time, bursts of `burst_cpu_s`) re-runs a batch of sampled queries
exactly: one pass over the collection's vectors, read back from the live index in chunks
(`HnswIndex.get_vectors`, no second copy kept) and searched exactly chunk by chunk
(`_native.FlatIndex.search_groups`), each video scored by its best vector (as the search ranks
them). Then, per query,

    recall@k = |returned videos whose exact score >= s_e| / e      (at most 1)

with e = min(k, videos whose exact score passes min_score) and s_e the e-th best exact video score:
the share of the exact top-k videos the search returned (a tie at the k-th score counts either
way). Queries with nothing to find (e = 0) are skipped.

Estimating. Per (collection, ef), the mean of the last `window` per-query recalls, with a Wilson
score interval at `confidence` over an effective number of trials matched to the observed
variance (n_eff = n * p(1 - p) / s^2, the design effect of a clustered sample): a per-query recall
is the share of e result slots filled right, so n_eff lies between n (every slot of a query right
or wrong together: the plain binomial bound over queries) and the slots counted (independent
slots), and is clipped to that range.

Tuning (`EfTuner`). The breadth of searches that set no ef starts at the collection's ef_search
(its floor) and moves by `raise_factor`: up when the lower bound is under the target on a full
window (or, once `min_samples` are in, when even the upper bound is: an interval that straddles
the target waits for more samples, as raising on it overshoots), down when the lower bound clears
the target by `lower_margin` of the miss budget and the smaller breadth has not fallen short in
the last 10 windows of samples; no decision before `min_samples` at the breadth in use. Never
below the floor nor above MAX_EF; a request's own ef always wins (the native search uses the
tuned breadth only for ef = 0).

Keeping. Each move is stored in the collection's index settings (`Storage.save_tuned_ef`, key
`storage.base.TUNED_EF`, with the floor and target it was tuned under), so that a restart starts
from the tuned breadth instead of the floor (on dense data the floor missed 57 % of searches after
a restart, benchmarks/reliability/README.md). A stored breadth tuned under another floor or
target (a changed server default) is ignored. Failing to store it (a full disk) is logged; the
breadth still applies until the process stops.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
import structlog

from .. import _native, metrics
from ..config import RecallConfig, Settings
from ..ids import SAMPLE_BITS, sample_id, sample_ids
from ..storage import TUNED_EF

log = structlog.get_logger("frameseek.recall")

MAX_EF = int(_native.MAX_EF)
#: vectors read back and scored per step of an exact pass (x dim x 4 bytes: 32 MB at 512-d)
CHUNK_VECTORS = 16_384
#: breadths whose windows are kept per collection (least recently sampled ones are forgotten)
MAX_WINDOWS = 8


@dataclasses.dataclass(frozen=True)
class RecallEstimate:
    recall: float  # mean recall@k; 0 without samples
    lower: float  # confidence interval
    upper: float
    samples: int


def wilson(mean: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion observed as `mean` over n trials ((0, 1) for n = 0)."""
    if n == 0:
        return 0.0, 1.0
    z2 = z * z
    centre = (mean + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(max(mean * (1 - mean), 0.0) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


class TokenBucket:
    """CPU seconds the monitor may spend: refilled at `rate` per second of `clock`, holding at most
    `burst`. Work starts only while the balance is positive and is charged after it ran, so the
    total spent stays under rate * elapsed + burst + one piece of work."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.at = burst, clock()
        self.spent = 0.0

    def available(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return self.tokens > 0

    def charge(self, seconds: float) -> None:
        self.tokens -= seconds
        self.spent += seconds


class EfTuner:
    """One collection's breadth and its per-breadth windows of sampled recall (see the module
    docstring)."""

    def __init__(self, floor: int, target: float, cfg: RecallConfig, start: int | None = None):
        self.floor, self.target, self.cfg = max(1, min(floor, MAX_EF)), target, cfg
        self.ef = self.floor if start is None else max(self.floor, min(int(start), MAX_EF))
        self.z = statistics.NormalDist().inv_cdf(0.5 + cfg.confidence / 2)
        # (recall, result slots) of the latest sampled searches, per breadth
        self.windows: collections.OrderedDict[int, collections.deque[tuple[float, int]]] = collections.OrderedDict()
        self.failed: dict[int, int] = {}  # breadth -> samples seen when it fell short
        self.seen = 0

    def record(self, ef: int, recall: float, slots: int) -> None:
        w = self.windows.get(ef)
        if w is None:
            w = self.windows[ef] = collections.deque(maxlen=self.cfg.window)
            while len(self.windows) > MAX_WINDOWS:
                self.windows.popitem(last=False)
        self.windows.move_to_end(ef)
        w.append((recall, slots))
        self.seen += 1

    def estimate(self, ef: int | None = None) -> RecallEstimate:
        w = self.windows.get(self.ef if ef is None else ef)
        if not w:
            return RecallEstimate(0.0, 0.0, 1.0, 0)
        r = np.fromiter((x for x, _ in w), dtype=np.float64, count=len(w))
        n, slots, mean = len(r), sum(s for _, s in w), float(r.mean())
        var = float(r.var(ddof=1)) if n > 1 else 0.0
        n_eff = slots if var == 0 else min(slots, max(n, n * mean * (1 - mean) / var))
        lo, hi = wilson(mean, n_eff, self.z)
        return RecallEstimate(mean, lo, hi, n)

    def decide(self) -> int | None:
        """The new breadth, or None to stay."""
        est = self.estimate()
        if est.samples < self.cfg.min_samples:
            return None
        # short: the lower bound under the target, judged on a full window (a wide interval that
        # straddles the target waits for more samples: raising on it overshoots) unless even
        # the upper bound is under it
        if est.lower < self.target and (est.upper < self.target or est.samples >= self.cfg.window) and self.ef < MAX_EF:
            self.failed[self.ef] = self.seen
            return self._move(min(MAX_EF, max(self.ef + 1, math.ceil(self.ef * self.cfg.raise_factor))))
        comfortable = self.target + self.cfg.lower_margin * (1 - self.target)
        if est.lower >= comfortable and self.ef > self.floor:
            smaller = max(self.floor, int(self.ef / self.cfg.raise_factor))
            failed_at = self.failed.get(smaller)
            if failed_at is None or self.seen - failed_at >= 10 * self.cfg.window:
                return self._move(smaller)
        return None

    def _move(self, ef: int) -> int:
        self.windows.pop(ef, None)  # judge the new breadth on samples taken from now on
        self.ef = ef
        return ef


def exact_top_videos(
    index, videos: list[tuple[int, int]], queries: np.ndarray, k: int, stop: Callable[[], bool] = lambda: False
) -> tuple[np.ndarray, np.ndarray]:
    """The exact best `k` videos of each query: (video ids uint64[q, k], scores float32[q, k]), best
    first, padded with score -inf. `videos`: (video id, vectors it holds in `index`); the queries
    are as searched (normalised for IP); scores as the search reports them (IP: the dot product;
    L2: 1 - squared distance / 2). `stop()` true: give up between chunks (StopIteration).

    The exact group-by search is the native FlatIndex's (`search_groups`, one thread, so that the
    calling thread's CPU time is the whole cost), over chunks of whole videos read back from the
    live index; a video's best vector lies in its own chunk, so the chunks' top-k merge exactly.
    (A BLAS matmul over the same chunks costs about as much CPU, but spreads it over BLAS's own
    threads, where this thread's CPU clock, which the budget charges, does not see it.)"""
    nq = len(queries)
    best_ids = np.zeros((nq, 0), dtype=np.uint64)
    best = np.zeros((nq, 0), dtype=np.float32)
    l2 = index.metric == "l2"
    start = 0
    while start < len(videos):
        if stop():
            raise StopIteration
        chunk, n = [], 0
        while start < len(videos) and (n == 0 or n + videos[start][1] <= CHUNK_VECTORS):
            chunk.append(videos[start])
            n += videos[start][1]
            start += 1
        ids = np.concatenate([sample_ids(v, c) for v, c in chunk])
        try:
            x = index.get_vectors(ids)
        except ValueError:  # a video deleted meanwhile: read the others one by one
            chunk, x = _readable(index, chunk)
            if not chunk:
                continue
            ids = np.concatenate([sample_ids(v, c) for v, c in chunk])
        flat = _native.FlatIndex(index.dim, index.metric)
        flat.add(ids, x, groups=ids >> np.uint64(SAMPLE_BITS))
        groups, _, dist = flat.search_groups(queries, k, threads=1)
        scores = 1.0 - dist / 2.0 if l2 else 1.0 - dist
        all_ids = np.concatenate([best_ids, groups], axis=1)
        all_s = np.concatenate([best, scores.astype(np.float32)], axis=1)
        keep = min(k, all_s.shape[1])
        top = np.argpartition(-all_s, keep - 1, axis=1)[:, :keep]
        best_ids = np.take_along_axis(all_ids, top, axis=1)
        best = np.take_along_axis(all_s, top, axis=1)
    order = np.argsort(-best, axis=1, kind="stable")
    best_ids, best = np.take_along_axis(best_ids, order, axis=1), np.take_along_axis(best, order, axis=1)
    if best.shape[1] < k:
        pad = k - best.shape[1]
        best_ids = np.pad(best_ids, ((0, 0), (0, pad)))
        best = np.pad(best, ((0, 0), (0, pad)), constant_values=-np.inf)
    return best_ids, best


def _readable(index, chunk: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], np.ndarray]:
    kept, rows = [], []
    for v, c in chunk:
        try:
            rows.append(index.get_vectors(sample_ids(v, c)))
            kept.append((v, c))
        except ValueError:
            continue
    return kept, (np.concatenate(rows) if rows else np.zeros((0, index.dim), dtype=np.float32))


def recall_at_k(
    returned: np.ndarray, k: int, min_score: float, exact_ids: np.ndarray, exact: np.ndarray
) -> tuple[float, int] | None:
    """One search's (recall@k, e) (module docstring); None when the exact search finds nothing to return.
    `exact_ids` / `exact`: the query's exact best videos and scores, best first (more than k is fine)."""
    passing = exact[:k] >= min_score
    e = int(np.count_nonzero(passing))
    if e == 0:
        return None
    s_e = exact[e - 1]
    good = set(exact_ids[: len(exact)][exact >= s_e - 1e-6].tolist())
    hits = sum(1 for v in returned.tolist() if v in good)
    return min(1.0, hits / e), e


@dataclasses.dataclass
class _Watched:
    """What the monitor keeps of one collection."""

    name: str
    index: object
    tuner: EfTuner
    videos: dict[int, int]  # video id -> vectors in the index (samples, plus coarse twins if any)
    pending: collections.deque  # sampled searches not yet measured (the newest `batch`)
    overflow: int = 0  # sampled searches replaced by newer ones before the budget allowed measuring them
    native_dropped: int = 0  # searches the native queue had no room for (cumulative)


class RecallMonitor:
    """Samples, measures and tunes every collection of one serving process (module docstring).
    Fed by the search's storage observer (collection_added, video_added, ...); `step()` does one
    piece of work and is what the background thread repeats, so tests drive it directly with
    their own clocks."""

    def __init__(
        self,
        directory,
        settings: Settings,
        storage,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ):
        self.directory, self.settings, self.cfg = directory, settings, settings.recall
        self.storage = storage  # keeps each collection's tuned breadth (Storage.save_tuned_ef)
        self.bucket = TokenBucket(self.cfg.cpu_share, self.cfg.burst_cpu_s, clock)
        self.cpu_clock = cpu_clock
        self.measured = 0  # sampled searches measured, all collections
        self._lock = threading.Lock()
        self._watched: dict[int, _Watched] = {}
        self._turn = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what the search's storage observer passes on -------------------------------------------
    def _settings_of(self, rec) -> tuple[int, float]:
        """(ef_search floor, target recall) of a collection; a collection created before a setting
        existed has the server's default."""
        floor = int(rec.index.get("ef_search") or self.settings.index.ef_search)
        return floor, float(rec.index.get("target_recall") or self.settings.index.target_recall)

    def collection_added(self, rec, index) -> None:
        if not isinstance(index, (_native.LiveIndex, _native.HnswIndex)):
            # an external engine's kNN (vector_store = milvus): its vectors are not read back here,
            # so its searches are neither measured nor tuned (a request's ef still applies)
            with self._lock:
                self._watched.pop(rec.id, None)
            return
        floor, target = self._settings_of(rec)
        with self._lock:
            w = self._watched.get(rec.id)
            if w is None or w.tuner.floor != floor or w.tuner.target != target:
                tuner = EfTuner(floor, target, self.cfg, start=self._stored_ef(rec, floor, target))
                w = _Watched(rec.name, index, tuner, {}, collections.deque(maxlen=self.cfg.batch))
                self._watched[rec.id] = w
            else:
                w.index = index
        # a directory entry put again starts untuned and unsampled: set both again
        self.directory.set_search_ef(rec.id, w.tuner.ef)
        self.directory.sample_searches(rec.id, self.cfg.sample_every, 2 * self.cfg.batch)
        self._publish(rec.id, w)

    @staticmethod
    def _stored_ef(rec, floor: int, target: float) -> int | None:
        """The breadth stored for the collection by an earlier run, if tuned under these settings."""
        tuned = rec.index.get(TUNED_EF)
        if not isinstance(tuned, dict) or tuned.get("floor") != floor or tuned.get("target") != target:
            return None
        return int(tuned["ef"])

    def collection_removed(self, collection_id: int) -> None:
        with self._lock:
            w = self._watched.pop(collection_id, None)
        if w is not None:
            for gauge in metrics.RECALL_GAUGES:
                try:
                    gauge.remove(w.name)
                except KeyError:
                    pass

    def video_added(self, rec, timestamps: np.ndarray) -> None:
        self.videos_added([(rec, timestamps)])

    def videos_added(self, entries) -> None:
        """The videos of one commit: each one's vector count (twice its samples when it was
        indexed with coarse twins), under one lock for the batch."""
        with self._lock:
            watched = [(self._watched.get(rec.collection_id), rec.id, len(ts)) for rec, ts in entries]
        counts = [
            (w, vid, 2 * n if n > 0 and sample_id(vid, n) in w.index else n) for w, vid, n in watched if w is not None
        ]
        with self._lock:
            for w, vid, n in counts:
                w.videos[vid] = n

    def videos_loaded(self) -> None:
        """Every video stored before the start, at once (the search's follow_storage): the vector
        counts come from the storage's own table where it keeps one (EmbeddedStorage.
        indexed_videos), instead of one probe of the index per video as video_added does."""
        counts_of = getattr(self.storage, "indexed_videos", None)
        if counts_of is None:
            for rec, timestamps in self.storage.video_entries():
                self.video_added(rec, timestamps)
            return
        with self._lock:
            watched = list(self._watched.items())
        for collection_id, w in watched:
            counts = counts_of(collection_id)
            with self._lock:
                w.videos.update(counts)

    def video_removed(self, video_id: int) -> None:
        with self._lock:
            for w in self._watched.values():
                w.videos.pop(video_id, None)

    # -- what searches and GetStats read --------------------------------------------------------
    def ef_in_use(self, rec) -> int:
        """The breadth of the collection's searches that set no ef."""
        w = self._watched.get(rec.id)
        return w.tuner.ef if w is not None else self._settings_of(rec)[0]

    def stats(self, collection_id: int) -> dict:
        with self._lock:  # the monitor's thread appends to the windows
            w = self._watched.get(collection_id)
            if w is None:
                return {}
            est = w.tuner.estimate()
        return {
            "measured_recall": est.recall,
            "measured_recall_lower": est.lower if est.samples else 0.0,
            "recall_samples": est.samples,
            "search_ef": w.tuner.ef,
        }

    # -- the work -------------------------------------------------------------------------------
    def step(self) -> int:
        """Collect sampled searches; if the budget allows, measure one batch of one collection
        (round robin) and tune its breadth. Returns the searches measured."""
        with self._lock:
            watched = list(self._watched.items())
        ready = []
        for cid, w in watched:
            try:
                taken, native_dropped = self.directory.take_sampled_searches(cid)
            except KeyError:  # dropped meanwhile
                continue
            overflow = max(0, len(w.pending) + len(taken) - (w.pending.maxlen or 0))
            w.overflow += overflow
            metrics.RECALL_UNMEASURED.inc(overflow + max(0, native_dropped - w.native_dropped))
            w.native_dropped = native_dropped
            w.pending.extend(taken)  # keeps the newest
            if w.pending:
                ready.append((cid, w))
        if not ready or not self.bucket.available():
            return 0
        self._turn += 1
        cid, w = ready[self._turn % len(ready)]
        batch = list(w.pending)
        w.pending.clear()
        t0 = self.cpu_clock()
        try:
            recalls = self.measure(w, batch)
        finally:
            spent = max(0.0, self.cpu_clock() - t0)
            self.bucket.charge(spent)
            metrics.RECALL_CPU_SECONDS.inc(spent)
        with self._lock:
            for ef, r, slots in recalls:
                w.tuner.record(ef, r, slots)
            was = w.tuner.ef
            new = w.tuner.decide()
        if new is not None:
            log.info("search_ef_tuned", collection=w.name, ef=new, was=was, target=w.tuner.target)
            try:
                self.directory.set_search_ef(cid, new)
            except KeyError:  # dropped meanwhile
                pass
            self._keep(cid, w, new)
        self._publish(cid, w)
        self.measured += len(batch)
        metrics.RECALL_MEASURED.inc(len(batch))
        return len(batch)

    def _keep(self, cid: int, w: _Watched, ef: int) -> None:
        try:
            self.storage.save_tuned_ef(cid, {"ef": ef, "floor": w.tuner.floor, "target": w.tuner.target})
        except Exception as exc:  # a full disk, a collection dropped meanwhile: the breadth still applies
            log.warning("search_ef_not_stored", collection=w.name, ef=ef, error=f"{type(exc).__name__}: {exc}")

    def measure(self, w: _Watched, batch: list) -> list[tuple[int, float, int]]:
        """(ef used, recall@k, result slots e) of each sampled search of `batch` that had something
        to find."""
        with self._lock:
            videos = list(w.videos.items())
        if not videos:
            return []
        queries = np.stack([s[0] for s in batch]).astype(np.float32, copy=False)
        k = max(s[1] for s in batch)
        try:  # + 8: ties at the k-th
            exact_ids, exact = exact_top_videos(w.index, videos, queries, k + 8, stop=self._stop.is_set)
        except StopIteration:  # the server is closing
            return []
        out = []
        for i, (_, kq, min_score, ef, returned) in enumerate(batch):
            r = recall_at_k(returned, kq, min_score, exact_ids[i], exact[i])
            if r is not None:
                out.append((ef, *r))
        return out

    def _publish(self, cid: int, w: _Watched) -> None:
        with self._lock:
            est = w.tuner.estimate()
        metrics.RECALL.labels(w.name).set(est.recall)
        metrics.RECALL_LOWER.labels(w.name).set(est.lower if est.samples else 0.0)
        metrics.RECALL_UPPER.labels(w.name).set(est.upper if est.samples else 0.0)
        metrics.RECALL_SAMPLES.labels(w.name).set(est.samples)
        metrics.SEARCH_EF.labels(w.name).set(w.tuner.ef)
        metrics.RECALL_TARGET.labels(w.name).set(w.tuner.target)

    # -- the background thread ------------------------------------------------------------------
    def start(self) -> None:
        if self.cfg.sample_every == 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="recall-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        try:  # Linux: a thread has its own nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass
        while not self._stop.is_set():
            try:
                busy = self.step()
            except Exception:  # a failed measurement must not stop the monitor
                log.exception("recall_measurement_failed")
                busy = 0
            if not busy:
                self._stop.wait(self.cfg.period_s)
