"""Experiment, not the shipped path: do 2x2 + centre crop query embeddings rescue picture-in-picture?

    python -m benchmarks.copydetect.run            # first: makes and caches the seed-7 media
    python -m benchmarks.copydetect.crops_experiment

Each query frame (1 fps, decoded with PyAV) is embedded whole, mirrored, and as 5 crops (four
overlapping 60 % corners + the centre 60 %); all 7 neighbour sets sit side by side ([q, 7k]) in
`frameseek.matching.align`, as the flipped set does in the server. Prints the top candidates of
the PiP copies, all unrelated queries and three re-encoded copies (threshold unchanged).
The server does not do this (it would cost 3.5x the query embedding time); see benchmarks/README.md.
"""
import glob

import av
import numpy as np

from benchmarks.copydetect import run as R
from frameseek import _native, matching


CROPS = [(0, 0, .6, .6), (.4, 0, 1, .6), (0, .4, .6, 1), (.4, .4, 1, 1), (.2, .2, .8, .8)]  # x0, y0, x1, y1


def frames_1fps(path: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """RGB frames at one per second of presentation time."""
    times, images, nxt = [], [], 0.0
    with av.open(path) as c:
        for f in c.decode(video=0):
            if float(f.time) + 1e-6 >= nxt:
                times.append(float(f.time))
                images.append(f.to_ndarray(format="rgb24"))
                nxt += 1.0
    return np.array(times), images


def main() -> None:
    emb_cache = R.Embeddings()
    emb = emb_cache.embedder()
    media = R.CACHE / "media" / "seed7_refs20"
    index = _native.FlatIndex(emb.dim, "ip")
    ref_times, durations, names = {}, {}, {}
    for vid, path in enumerate(sorted(glob.glob(str(media / "ref_*.mp4"))), 1):
        e = emb_cache.get(path, query=False)
        ids = (np.uint64(vid) << np.uint64(20)) + np.arange(len(e["t"]), dtype=np.uint64)
        index.add(ids, e["v"], groups=np.full(len(ids), vid, np.uint64))
        ref_times[vid], durations[vid] = e["t"], float(e["duration"])
        names[vid] = path.rsplit("ref_", 1)[1].removesuffix(".mp4").removesuffix("_7")

    def search(path: str) -> list[tuple[str, float]]:
        t, images = frames_1fps(path)
        sets = [emb.embed(images), emb.embed(images, flip=True)]
        for x0, y0, x1, y1 in CROPS:
            sets.append(emb.embed([im[int(y0 * im.shape[0]):int(y1 * im.shape[0]),
                                       int(x0 * im.shape[1]):int(x1 * im.shape[1])].copy() for im in images]))
        found = [matching.search_neighbors(index, v, 32) for v in sets]
        ids = np.hstack([f[0] for f in found])
        sims = np.hstack([f[1] for f in found])
        valid = ids != matching.NO_ID
        groups = np.where(valid, ids >> np.uint64(20), matching.NO_ID).astype(np.uint64)
        times = np.zeros(ids.shape)
        for vid in np.unique(groups[valid]).tolist():
            sel = groups == vid
            times[sel] = ref_times[vid][(ids[sel] & np.uint64(0xFFFFF)).astype(np.int64)]
        ms = matching.align(t, ids, groups, times, sims, frame_weights=matching.redundancy_weights(sets[0]),
                            ref_durations=durations, query_interval=1.0, ref_interval=1 / 3)
        return [(names[m.video], round(m.score, 3)) for m in ms[:2]]

    queries = (sorted(glob.glob(str(media / "queries" / "q_pip_*.mp4")))
               + sorted(glob.glob(str(media / "queries" / "u_*.mp4")))
               + sorted(glob.glob(str(media / "queries" / "q_reencode_*.mp4")))[:3])
    for q in queries:
        print(q.rsplit("/", 1)[1], search(q), flush=True)


if __name__ == "__main__":
    main()
