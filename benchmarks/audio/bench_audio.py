"""Soundtrack search: recall, false positives, offset error and speed (`python -m benchmarks.audio.bench_audio`).

Media (benchmarks/audio/sources, cached under build/audio/): reference soundtracks of espeak-ng
speech (several voices and texts, joined) and fluidsynth-rendered MIDI songs (GM soundfont),
laid under opencv-doc's real footage as MP4 (H.264 + AAC); unrelated audio (other texts and
songs) that is never indexed. Each reference is queried by a cut at a seeded arbitrary offset
under every transform (re-encode MP3/AAC at 32-64 kb/s, volume +-6 dB, resampling, white noise
at 10 dB SNR, +-5 % tempo with the pitch kept (atempo), +-5 % speed with the pitch following
(asetrate: a sped-up video)); the unrelated clips measure false positives.

The matcher is the server's (`frameseek.modality.audio.AUDIO.match` over a native
`FingerprintIndex`, with the server's default threshold and minimum match length); fingerprinting
is the server's (`frameseek.media.audio.soundtrack`, one thread). Speed: fingerprinting x
realtime on the reference MP4s; query time of the index at N soundtracks beside a numpy
brute-force scan (every offset of every soundtrack, bit error rate by np.bitwise_count) at
--bf-n, both in this run. The N soundtracks beyond the real references are random
sub-fingerprints (uniform values spread postings evenly; a real library's skewed values make
longer postings lists, so treat the large-N figure as a lower bound).

Prints a table and writes benchmarks/results/audio.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.audio import sources
from frameseek import _native
from frameseek.config import AudioConfig
from frameseek.media.audio import soundtrack
from frameseek.modality.audio import AUDIO

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "audio"
RESULTS = ROOT / "benchmarks" / "results" / "audio.json"
TRANSFORMS = [
    "identity",
    "mp3_32k",
    "aac_48k",
    "mp3_64k",
    "volume_+6db",
    "volume_-6db",
    "resample_8k",
    "resample_22k",
    "noise_10db",
    "tempo_+5%",
    "tempo_-5%",
    "speed_+5%",
    "speed_-5%",
]


def make_references(
    n: int, seconds: float, seed: int, pictures: list[Path] | None = None
) -> tuple[list[tuple[str, Path, Path]], list[Path]]:
    """(name, audio, mp4) of n references (half speech, half music), and unrelated audio clips.
    Reference i is laid under pictures[i] when given (distinct pictures: bench_fusion), else under
    a seeded pick of opencv-doc's footage."""
    CACHE.mkdir(parents=True, exist_ok=True)
    films = sources.footage()
    rng = random.Random(seed)
    refs = []
    for i in range(n):
        if i % 2 == 0:
            # every speech reference distinct: its own voice per sentence and its own pitch
            k, parts = i // 2, []
            for j in range(3):
                t = (k * 3 + j) % len(sources.TEXTS)
                v = sources.VOICES[(k + j) % len(sources.VOICES)]
                pitch = 25 + 12 * (k % 6)
                parts.append(sources.speech(CACHE / f"sp-{t}-{v}-{pitch}.wav", sources.TEXTS[t], v, pitch=pitch))
            audio = sources.concat_audio(CACHE / f"ref-speech-{i}.wav", parts)
        else:
            audio = sources.music(CACHE / f"ref-music-{seed}-{i}.wav", seed=seed * 1000 + i, seconds=seconds)
        if pictures is None:
            mp4 = sources.with_picture(CACHE / f"ref-{seed}-{i}.mp4", audio, films[rng.randrange(len(films))])
        else:
            mp4 = sources.with_picture(CACHE / f"ref-{seed}-{i}-{pictures[i].stem}.mp4", audio, pictures[i])
        refs.append((f"ref{i}", audio, mp4))
    unrelated = [
        sources.music(CACHE / f"unrel-music-{seed}-{i}.wav", seed=seed * 1000 + 500 + i, seconds=12.0) for i in range(4)
    ]
    for i, text in enumerate(sources.UNRELATED_TEXTS):
        v = sources.VOICES[(i + 3) % len(sources.VOICES)]
        unrelated.append(sources.speech(CACHE / f"unrel-sp-{i}-{v}.wav", text, v, speed=175, pitch=30))
    unrelated.append(sources.noise_wav(CACHE / f"unrel-noise-{seed}.wav", 10.0, seed))
    return refs, unrelated


def brute_force_best(query: np.ndarray, refs: list[np.ndarray]) -> tuple[int, int, float]:
    """(video index, offset, BER) of the lowest-BER full placement of the query in any reference
    (queries shorter than the reference): every offset of every soundtrack."""
    m = len(query)
    best = (-1, 0, 1.0)
    for vi, r in enumerate(refs):
        if len(r) < m:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(r, m)  # [n - m + 1, m]
        bits = np.bitwise_count(windows ^ query[None, :]).sum(axis=1, dtype=np.int64)
        j = int(np.argmin(bits))
        ber = bits[j] / (32.0 * m)
        if ber < best[2]:
            best = (vi, j, float(ber))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refs", type=int, default=12, help="reference soundtracks (half speech, half music)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the music references, s")
    ap.add_argument("--query-seconds", type=float, default=8.0, help="length of each query cut, s")
    ap.add_argument("--scale-n", type=int, default=10_000, help="soundtracks in the query-time index")
    ap.add_argument("--scale-seconds", type=float, default=180.0, help="length of each distractor soundtrack, s")
    ap.add_argument("--bf-n", type=int, default=300, help="soundtracks in the numpy brute-force comparison")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    sources.ensure_tools()
    cfg = AudioConfig()
    t0 = time.perf_counter()
    refs, unrelated = make_references(a.refs, a.seconds, a.seed)
    media_s = time.perf_counter() - t0

    # fingerprinting x realtime: the reference MP4s (AAC decode + resample + Chromaprint), one thread
    # (CPU seconds of this process: on a shared machine the wall clock counts other work too)
    tracks, audio_s, fp_s, fp_wall = [], 0.0, 0.0, 0.0
    for _, _, mp4 in refs:
        t, w = time.process_time(), time.perf_counter()
        tr = soundtrack(mp4)
        fp_s += time.process_time() - t
        fp_wall += time.perf_counter() - w
        audio_s += tr.duration
        tracks.append(tr)
    index = _native.FingerprintIndex()
    for vid, tr in enumerate(tracks):
        index.add(vid, tr.values)

    rng = random.Random(a.seed)
    noise = sources.noise_wav(CACHE / f"noise-{a.seed}.wav", 60.0, a.seed + 7)
    qdir = CACHE / "queries"
    qdir.mkdir(exist_ok=True)
    per: dict[str, dict] = {}
    for name in TRANSFORMS:
        found, offs, scores = 0, [], []
        for vid, (_, audio, _) in enumerate(refs):
            dur = tracks[vid].duration
            start = round(rng.uniform(0.0, max(0.0, dur - a.query_seconds - 0.5)), 2)
            q = soundtrack(sources.transform(qdir, audio, name, start, a.query_seconds, noise=noise))
            ms = AUDIO.match(index, q, k=5, min_score=cfg.threshold, min_match_seconds=cfg.min_match_seconds)
            if ms and ms[0].video == vid:
                found += 1
                offs.append(abs(ms[0].offset - start))
                scores.append(ms[0].score)
        per[name] = {
            "recall": found / len(refs),
            "median_offset_error_s": statistics.median(offs) if offs else None,
            "max_offset_error_s": max(offs) if offs else None,
            "min_score": min(scores) if scores else None,
        }

    # false positives: unrelated audio (never indexed), every verified match counted, and the best
    # score any of them reaches with no threshold at all (the calibration margin)
    fp, best_unrelated = 0, 0.0
    for p in unrelated:
        q = soundtrack(p)
        hits = AUDIO.match(index, q, k=10, min_score=cfg.threshold, min_match_seconds=cfg.min_match_seconds)
        fp += len(hits)
        for m in hits:
            print(f"false positive: {p.name} -> {refs[m.video][0]} score {m.score:.3f} for {m.duration:.1f} s")
        allm = AUDIO.match(index, q, k=10, min_score=0.0, min_match_seconds=cfg.min_match_seconds)
        best_unrelated = max([best_unrelated] + [m.score for m in allm])

    # query time: the index at bf-n and scale-n soundtracks vs numpy brute force at bf-n
    rs = np.random.default_rng(a.seed)
    items = int(a.scale_seconds / tracks[0].item_duration)
    queries = []
    for vid, tr in enumerate(tracks):
        m = int(a.query_seconds / tr.item_duration)
        s = rs.integers(0, max(1, len(tr.values) - m))
        queries.append((vid, tr.values[s : s + m].copy(), int(s)))
    bf_refs = [tr.values for tr in tracks] + [
        rs.integers(0, 2**32, items, dtype=np.uint32) for _ in range(max(0, a.bf_n - len(tracks)))
    ]
    t = time.perf_counter()
    bf_ok = sum(brute_force_best(q, bf_refs)[:2] == (vid, s) for vid, q, s in queries)
    bf_ms = (time.perf_counter() - t) * 1000 / len(queries)
    big = _native.FingerprintIndex()
    for vid, r in enumerate(bf_refs):
        big.add(vid, r)

    def timed(ix) -> tuple[float, int]:
        params = _native.FingerprintMatchParams()
        params.min_length = int(cfg.min_match_seconds / tracks[0].item_duration)
        ok, t = 0, time.perf_counter()
        for _ in range(3):
            for vid, q, s in queries:
                r = ix.search(q, params)
                ok += bool(r) and r[0]["video"] == vid and r[0]["ref_start"] - r[0]["query_start"] == s
        return (time.perf_counter() - t) * 1000 / (3 * len(queries)), ok // 3

    ix_bf_ms, ix_bf_ok = timed(big)
    t = time.perf_counter()
    for vid in range(len(bf_refs), a.scale_n):
        big.add(vid, rs.integers(0, 2**32, items, dtype=np.uint32))
    build_s = time.perf_counter() - t
    ix_n_ms, ix_n_ok = timed(big)

    report = {
        "config": vars(a) | {"threshold": cfg.threshold, "min_match_seconds": cfg.min_match_seconds},
        "popcount_simd": _native.popcount_simd_level(),
        "media_seconds": media_s,
        "fingerprinting": {
            "audio_seconds": audio_s,
            "cpu_seconds": fp_s,
            "wall_seconds": fp_wall,
            "x_realtime_one_core": audio_s / fp_s,
        },
        "transforms": per,
        "unrelated": {"queries": len(unrelated), "false_positives": fp, "best_score": best_unrelated},
        "query_time": {
            "query_seconds": a.query_seconds,
            "items_per_soundtrack": items,
            f"index_ms@{len(bf_refs)}": ix_bf_ms,
            f"index_correct@{len(bf_refs)}": ix_bf_ok,
            f"numpy_brute_force_ms@{len(bf_refs)}": bf_ms,
            f"numpy_brute_force_correct@{len(bf_refs)}": bf_ok,
            f"index_ms@{a.scale_n}": ix_n_ms,
            f"index_correct@{a.scale_n}": ix_n_ok,
            "index_items": big.items,
            "index_build_seconds": build_s,
            "queries": len(queries),
        },
    }
    print(f"{'transform':<14}{'recall':>8}{'med.off.err':>13}{'max.off.err':>13}{'min score':>11}")
    for name, r in per.items():

        def f(x, fmt="{:.3f}"):
            return fmt.format(x) if x is not None else "-"

        print(
            f"{name:<14}{r['recall']:>8.2f}{f(r['median_offset_error_s']):>13}"
            f"{f(r['max_offset_error_s']):>13}{f(r['min_score']):>11}"
        )
    print(
        f"unrelated: {fp} false positives over {len(unrelated)} queries (threshold {cfg.threshold}); "
        f"best unrelated score {best_unrelated:.3f}"
    )
    print(
        f"fingerprinting (MP4, AAC): {audio_s:.0f} s of audio in {fp_s:.2f} CPU s = {audio_s / fp_s:.0f}x realtime "
        f"on one core ({fp_wall:.2f} s wall on this shared machine)"
    )
    qt = report["query_time"]
    print(
        f"query ({a.query_seconds:g} s): index {ix_bf_ms:.2f} ms vs numpy brute force {bf_ms:.1f} ms at "
        f"{len(bf_refs)} soundtracks ({ix_bf_ok}/{len(queries)} vs {bf_ok}/{len(queries)} placed exactly); "
        f"index {ix_n_ms:.2f} ms at {a.scale_n} soundtracks of {a.scale_seconds:g} s ({qt['index_items']} items, "
        f"{ix_n_ok}/{len(queries)} placed exactly) [popcount {_native.popcount_simd_level()}]"
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
