"""frameseek.matching: weighting and alignment on constructed match sets, plus one end-to-end
run on tiny generated clips (real ffmpeg media, real embedder, real native index)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from frameseek import _native, matching
from frameseek.ids import NO_ID, SAMPLE_BITS


def _neighbours(q: int, k: int, fill: float = -1.0):
    ids = np.full((q, k), NO_ID, np.uint64)
    groups = np.full((q, k), NO_ID, np.uint64)
    times = np.zeros((q, k), np.float64)
    sims = np.full((q, k), fill, np.float32)
    return ids, groups, times, sims


def _copy_set(offset: float, speed: float, q: int = 20, seed: int = 0):
    """Query frames at 1 s; column 0 = the true frame of video 7 (t_ref = offset + speed * t),
    columns 1-3 = random frames of videos 100..102 at chance similarity."""
    rng = np.random.default_rng(seed)
    ids, groups, times, sims = _neighbours(q, 4)
    t = np.arange(q, dtype=np.float64)
    ids[:, 0] = (7 << SAMPLE_BITS) + np.arange(q)
    groups[:, 0] = 7
    times[:, 0] = offset + speed * t
    sims[:, 0] = 0.85
    for j in range(1, 4):
        ids[:, j] = ((100 + j) << SAMPLE_BITS) + rng.integers(0, 1000, q)
        groups[:, j] = 100 + j
        times[:, j] = rng.uniform(0, 60, q)
        sims[:, j] = rng.uniform(0.41, 0.5, q)
    return t, ids, groups, times, sims


def test_similarities_convert_native_distances():
    d = np.array([[0.0, 0.25, np.inf]], np.float32)
    assert np.allclose(matching.similarities(d, "ip"), [[1.0, 0.75, -1.0]])
    assert np.allclose(matching.similarities(np.array([[0.0, 2.0]], np.float32), "l2"), [[1.0, 0.0]])


def test_redundancy_weights_collapse_a_static_shot():
    rng = np.random.default_rng(1)
    card = rng.normal(size=64)
    v = np.vstack([np.tile(card, (4, 1)), rng.normal(size=(4, 64))]).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    w = matching.redundancy_weights(v)
    assert np.allclose(w[:4], 0.25) and np.allclose(w[4:], 1.0)
    assert matching.redundancy_weights(np.zeros((0, 8), np.float32)).shape == (0,)


def test_vote_weights_downweight_frames_matching_many_videos():
    ids, groups, _, sims = _neighbours(2, 6)
    # frame 0: near-duplicates in 6 videos (a generic frame); frame 1: one video
    ids[0] = np.arange(6) + 1
    groups[0] = np.arange(6) + 1
    sims[0] = 0.9
    ids[1, 0], groups[1, 0], sims[1, 0] = 50, 50, 0.9
    w = matching.vote_weights(ids, groups, sims)
    assert w[1, 0] == pytest.approx(1.0)
    assert w[0, 0] == pytest.approx(2.0 / 6.0)
    rw = np.full(w.shape, 0.5, np.float32)
    assert np.allclose(matching.vote_weights(ids, groups, sims, ref_weights=rw), w * 0.5)
    with pytest.raises(ValueError):
        matching.vote_weights(ids, groups, sims, ref_weights=rw[:, :3])


def test_reference_frame_weights_count_distinct_videos():
    groups = np.array([[1, 1, 2, 3], [1, 1, 1, NO_ID]], np.uint64)
    sims = np.array([[1.0, 0.9, 0.8, 0.8], [1.0, 0.95, 0.5, -1.0]], np.float32)
    w = matching.reference_frame_weights(groups, sims, min_similarity=0.75)
    assert np.allclose(w, [1 / 3, 1.0])


@pytest.mark.parametrize("offset,speed", [(5.0, 1.0), (12.5, 1.25), (3.0, 0.8)])
def test_align_recovers_offset_and_speed(offset, speed):
    t, ids, groups, times, sims = _copy_set(offset, speed)
    ms = matching.align(t, ids, groups, times, sims, query_interval=1.0)
    assert ms[0].video == 7
    assert ms[0].score >= matching.COPY_THRESHOLD
    assert ms[0].speed == pytest.approx(speed, rel=0.03)
    assert abs(ms[0].offset + ms[0].speed * 10 - (offset + speed * 10)) < 0.5
    assert all(m.score < matching.COPY_THRESHOLD for m in ms[1:])  # chance matches stay below


def test_align_counts_a_reference_frame_listed_twice_once():
    """Flip-robust queries list plain and mirrored neighbours side by side ([q, 2k]); a frame
    found by both must not double its vote."""
    t, ids, groups, times, sims = _copy_set(5.0, 1.0)
    one = matching.align(t, ids, groups, times, sims, query_interval=1.0)[0]
    two = matching.align(
        t,
        np.hstack([ids, ids]),
        np.hstack([groups, groups]),
        np.hstack([times, times]),
        np.hstack([sims, sims]),
        query_interval=1.0,
    )[0]
    assert two.video == one.video and two.score == pytest.approx(one.score, rel=1e-5)


def test_align_discounts_a_shared_static_title_card():
    """6 identical query frames (a title card) match a reference's card perfectly, the other 14
    frames match nothing: one piece of evidence out of 15 must stay below the threshold, while
    without the redundancy weights it would not."""
    q = 20
    ids, groups, times, sims = _neighbours(q, 3)
    t = np.arange(q, dtype=np.float64)
    for i in range(6):
        ids[i, :3] = (9 << SAMPLE_BITS) + np.arange(3) * 3 + i  # card frames of the reference, 3 fps
        groups[i, :3] = 9
        times[i, :3] = np.arange(3) + i
        sims[i, :3] = 0.99
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(q, 32)).astype(np.float32)
    vecs[:6] = vecs[0]
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    fw = matching.redundancy_weights(vecs)
    with_fw = matching.align(t, ids, groups, times, sims, frame_weights=fw, query_interval=1.0)
    without = matching.align(t, ids, groups, times, sims, query_interval=1.0)
    assert without and without[0].score >= matching.COPY_THRESHOLD
    assert not with_fw or with_fw[0].score < matching.COPY_THRESHOLD


def test_align_validates_inputs():
    t, ids, groups, times, sims = _copy_set(0.0, 1.0)
    with pytest.raises(ValueError):
        matching.align(t, ids, groups, times, sims, frame_weights=np.ones(3, np.float32))
    assert matching.align(t[:0], ids[:0], groups[:0], times[:0], sims[:0]) == []
    with pytest.raises(ValueError):
        matching.MatchSettings(threshold=1.5)


def _unit_vectors_indexed(seed: int, n: int):
    """n random unit vectors (16-d) and an exact index holding them with ids 0..n-1."""
    base = np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    index = _native.FlatIndex(16, "ip")
    index.add(np.arange(n, dtype=np.uint64), base)
    return base, index


def test_search_neighbors_concatenates_flipped_results():
    base, index = _unit_vectors_indexed(seed=3, n=50)
    ids, sims = matching.search_neighbors(index, base[:3], 2, flip_vectors=base[10:13])
    assert ids.shape == (3, 4) and sims.dtype == np.float32
    assert ids[:, 0].tolist() == [0, 1, 2] and ids[:, 2].tolist() == [10, 11, 12]
    assert np.allclose(sims[:, 0], 1.0, atol=1e-5)
    with pytest.raises(ValueError):
        matching.search_neighbors(index, base[:3], 2, flip_vectors=base[:2])


def test_search_neighbors_places_region_views_beside_the_frame():
    base, index = _unit_vectors_indexed(seed=4, n=60)
    ids, sims = matching.search_neighbors(
        index, base[:3], 2, flip_vectors=base[10:13], region_vectors=[base[20:23], base[30:33]]
    )
    assert ids.shape == (3, 8)
    assert [ids[:, c].tolist() for c in (0, 2, 4, 6)] == [[0, 1, 2], [10, 11, 12], [20, 21, 22], [30, 31, 32]]
    assert np.allclose(sims[:, ::2], 1.0, atol=1e-5)
    ids2, _ = matching.search_neighbors(index, base[:3], 2, region_vectors=[base[20:23]])
    assert ids2[:, 2].tolist() == [20, 21, 22]
    with pytest.raises(ValueError):
        matching.search_neighbors(index, base[:3], 2, region_vectors=[base[:2]])


def test_search_neighbors_places_coarse_views_beside_the_frame():
    base, index = _unit_vectors_indexed(seed=5, n=60)
    ids, sims = matching.search_neighbors(
        index,
        base[:3],
        2,
        flip_vectors=base[10:13],
        region_vectors=[base[30:33]],
        coarse_vectors=[base[40:43], base[50:53]],
    )
    assert ids.shape == sims.shape == (3, 10)
    # whole, mirror, coarse, coarse mirror, regions
    assert [ids[:, c].tolist() for c in (0, 2, 4, 6, 8)] == [
        [0, 1, 2],
        [10, 11, 12],
        [40, 41, 42],
        [50, 51, 52],
        [30, 31, 32],
    ]
    with pytest.raises(ValueError, match="coarse_vectors"):
        matching.search_neighbors(index, base[:3], 2, coarse_vectors=[base[:2]])


def test_region_views_cannot_inflate_the_score():
    """Three views of every query frame (whole, mirror, inset) all naming the same reference
    frame, or neighbouring ones, score exactly like the best single view, never above 1."""
    q = 12
    t = np.arange(q, dtype=np.float64)
    one_ids, one_groups, one_times, one_sims = _neighbours(q, 1)
    one_ids[:, 0] = (5 << SAMPLE_BITS) + 3 * np.arange(q)
    one_groups[:, 0] = 5
    one_times[:, 0] = 4.0 + t
    one_sims[:, 0] = 0.9
    single = matching.align(t, one_ids, one_groups, one_times, one_sims, query_interval=1.0, ref_interval=1 / 3)
    ids, groups, times, sims = (np.hstack([a, a, a]) for a in (one_ids, one_groups, one_times, one_sims))
    ids[:, 2] += 1  # the inset view's best match: the next reference frame (1/3 s later)
    times[:, 2] += 1 / 3
    sims[:, 1] = 0.85
    multi = matching.align(t, ids, groups, times, sims, query_interval=1.0, ref_interval=1 / 3)
    assert single and multi and multi[0].video == single[0].video == 5
    assert multi[0].score <= 1.0
    assert multi[0].score == pytest.approx(single[0].score, abs=0.02)
    assert multi[0].segments[0].frames <= q


# -- end to end on tiny generated media -------------------------------------------------------------

DATA = Path("/usr/share/doc/opencv-doc/examples/data")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None or not DATA.exists(), reason="needs ffmpeg and opencv-doc")
def test_end_to_end_subclip_flip_pip_and_title_card(tmp_path):
    from benchmarks.copydetect import media as M
    from frameseek.embed import load_embedder
    from frameseek.pipeline import SamplingSettings, embed_media, frame_views

    emb = load_embedder()
    pics = {p.name: p for p in M.photos()}
    card = tmp_path / "card.mp4"
    M.title_card(card, "SAME CARD", 4.0, "darkgreen")
    refs = {}
    for i, names in enumerate(
        [
            ("baboon.jpg", "fruits.jpg", "building.jpg"),
            ("messi5.jpg", "home.jpg", "smarties.png"),
            ("starry_night.jpg", "butterfly.jpg", "orange.jpg"),
        ]
    ):
        p = tmp_path / f"ref{i}.mp4"
        M.slideshow(p, [pics[n] for n in names], seed=i, seconds=3.0)
        refs[i + 1] = p
    with_card = tmp_path / "ref4.mp4"
    M.concat(with_card, [card, refs[3]])
    refs[4] = with_card
    del refs[3]  # ref 3's content lives on only inside ref 4 (after the card)
    other = tmp_path / "other.mp4"
    M.slideshow(other, [pics["apple.jpg"], pics["squirrel_cls.jpg"], pics["chicky_512.png"]], seed=9, seconds=3.0)

    index = _native.FlatIndex(emb.dim, "ip")
    ref_times, durations = {}, {}
    for vid, p in refs.items():
        m = embed_media(str(p), emb, SamplingSettings.reference(views=frame_views()))
        index.add(
            (np.uint64(vid) << np.uint64(SAMPLE_BITS)) + np.arange(len(m), dtype=np.uint64),
            m.vectors,
            groups=np.full(len(m), vid, np.uint64),
        )
        ref_times[vid], durations[vid] = m.timestamps, m.duration

    def search(path: Path) -> list[matching.Match]:
        # query regions as SearchByVideo's default (auto: a detected picture-in-picture inset)
        m = embed_media(str(path), emb, SamplingSettings.query(views=frame_views(mirror=True), regions="auto"))
        ids, sims = matching.search_neighbors(index, m.vectors, 16, m.sets["mirror"], m.region_vectors)
        valid = ids != NO_ID
        groups = np.where(valid, ids >> np.uint64(SAMPLE_BITS), NO_ID).astype(np.uint64)
        times = np.zeros(ids.shape)
        for vid in np.unique(groups[valid]).tolist():
            sel = groups == vid
            times[sel] = ref_times[vid][(ids[sel] & np.uint64(0xFFFFF)).astype(np.int64)]
        return [
            x
            for x in matching.align(
                m.timestamps,
                ids,
                groups,
                times,
                sims,
                frame_weights=matching.redundancy_weights(m.vectors),
                ref_durations=durations,
                query_interval=1.0,
                ref_interval=1 / 3,
            )
            if x.score >= matching.COPY_THRESHOLD
        ]

    # a 4 s sub-clip from 3.5 s of reference 1, re-encoded
    sub = tmp_path / "sub.mp4"
    M._run(["-ss", "3.5", "-t", "4", "-i", str(refs[1]), *M._enc(28), str(sub)])
    found = search(sub)
    assert [x.video for x in found] == [1]
    assert abs(found[0].offset + found[0].speed * 2.0 - 5.5) <= 1.0

    # a mirrored copy of reference 2
    flip = tmp_path / "flip.mp4"
    M._run(["-i", str(refs[2]), "-vf", "hflip", *M._enc(26), str(flip)])
    found = search(flip)
    assert [x.video for x in found] == [2]
    assert abs(found[0].offset) <= 1.0 and found[0].speed == pytest.approx(1.0, abs=0.05)

    # reference 1 as a picture-in-picture inset (half the width) over an unrelated clip: the
    # whole frame is mostly background; the detected inset's crop finds the copy
    pip = tmp_path / "pip.mp4"
    M._run(
        [
            "-i",
            str(other),
            "-i",
            str(refs[1]),
            "-filter_complex",
            f"[0:v]setsar=1[bg];[1:v]scale={M.W // 2}:-2,setsar=1[fg];[bg][fg]overlay=W*0.4:H*0.35:shortest=1",
            *M._enc(24),
            str(pip),
        ]
    )
    found = search(pip)
    assert [x.video for x in found] == [1]
    assert abs(found[0].offset) <= 1.0 and found[0].score <= 1.0

    # an unrelated clip that opens with the same title card as reference 4: no copy
    unrelated = tmp_path / "unrelated.mp4"
    M.concat(unrelated, [card, other])
    assert search(unrelated) == []


def test_align_bridges_holes_left_by_dropped_blank_frames():
    """Frames the blank filter dropped leave holes in the query's sampling (a logo on white:
    informative frames only at 0, 1, 7 and 11 s). A hole is no evidence of a cut, so the four
    consistent matches must still form one segment (max_gap alone would split them into runs
    shorter than min_segment_frames and report nothing)."""
    t = np.array([0.0, 1.0, 7.0, 11.0])
    ids, groups, times, sims = _neighbours(4, 2)
    ids[:, 0] = (3 << SAMPLE_BITS) + np.arange(4)
    groups[:, 0] = 3
    times[:, 0] = 2.0 + t
    sims[:, 0] = 0.95
    ms = matching.align(t, ids, groups, times, sims, query_interval=1.0)
    assert ms and ms[0].video == 3 and ms[0].score >= matching.COPY_THRESHOLD
    assert len(ms[0].segments) == 1 and ms[0].segments[0].frames == 4
    assert abs(ms[0].offset - 2.0) < 0.5


# -- dense re-alignment (refine_alignment) -------------------------------------------------------


def _storage_with_reference(tmp_path, rt, rv):
    """An opened EmbeddedStorage holding one 12 s reference video: (storage, collection, video id)."""
    from frameseek.storage import EmbeddedStorage, VideoRecord

    st = EmbeddedStorage(str(tmp_path / "data"))
    st.open()
    c = st.create_collection(
        "c",
        model="m",
        dimension=rv.shape[1],
        metric="ip",
        sampling={"fps": 3.0},
        index={"m": 16, "ef_construction": 200, "ef_search": 200},
    )
    rec = VideoRecord(
        id=0,
        collection_id=c.id,
        kind="video",
        duration=12.0,
        width=64,
        height=48,
        sample_count=len(rt),
        size_bytes=1,
        content_sha256="0" * 64,
    )
    return st, c, st.add_video(c.id, rec, rt, rv).id


def test_coarse_twins_of_the_reference_meet_the_coarse_view_and_count_once(tmp_path):
    """A reference indexed with coarse twins (Storage.add_video(twins=...)): a copy whose whole-
    frame view matches nothing and whose coarse view matches only the twins is found, at the right
    offset, through the twins (hits on vector n + i mapped back to sample i); a query frame that
    finds one reference frame through both of its vectors votes for it once (score <= 1); without
    the twins the same query finds nothing."""
    from frameseek.config import Settings
    from frameseek.service import FrameSeekService
    from frameseek.storage import VideoRecord

    rng = np.random.default_rng(21)
    dim, fps = 512, 3.0  # the model's size: unrelated random vectors stay far under the vote floor
    rt = np.arange(36) / fps
    rv = rng.normal(size=(36, dim))
    rv /= np.linalg.norm(rv, axis=1, keepdims=True)
    tw = rng.normal(size=(36, dim))  # the coarse embedding of a frame: another point than its full one
    tw /= np.linalg.norm(tw, axis=1, keepdims=True)
    qt = np.arange(8.0)
    rows = np.round((2.0 + qt) * fps).astype(int)  # the copy starts at 2 s of the reference
    coarse = tw[rows] + 0.05 * rng.normal(size=(8, dim))
    coarse /= np.linalg.norm(coarse, axis=1, keepdims=True)
    blind = rng.normal(size=(8, dim))
    basis, _ = np.linalg.qr(np.concatenate([rv, tw]).T)
    blind -= (blind @ basis) @ basis.T  # a whole-frame view that no indexed vector sees
    blind /= np.linalg.norm(blind, axis=1, keepdims=True)
    st, c, plain = _storage_with_reference(tmp_path, rt, rv.astype(np.float32))
    rec = VideoRecord(
        id=0,
        collection_id=c.id,
        kind="video",
        duration=12.0,
        width=64,
        height=48,
        sample_count=len(rt),
        size_bytes=1,
        content_sha256="1" * 64,
    )
    twinned = st.add_video(c.id, rec, rt, rv.astype(np.float32), twins=tw.astype(np.float32)).id
    svc = FrameSeekService(Settings(data_dir=str(tmp_path / "data2")), storage=st)
    try:
        views = [blind.astype(np.float32), None, coarse.astype(np.float32)]
        got = svc.search.video_matches(c, qt, views, 3, None, 8, 1.0)
        same = np.concatenate([rv[rows], tw[rows]]).astype(np.float32)  # both vectors of the same frames
        exact = svc.search.video_matches(c, qt, [same[:8], None, same[8:]], 3, None, 8, 1.0)
    finally:
        for pool in svc.core.pools():
            pool.shutdown(wait=True)
        st.close()
    assert [m.video.id for m in got if m.score >= matching.COPY_THRESHOLD] == [twinned]
    assert got[0].offset == pytest.approx(2.0, abs=0.2) and got[0].speed == pytest.approx(1.0, abs=0.05)
    assert all(m.score < 0.05 for m in got if m.video.id == plain)
    top = {m.video.id: m.score for m in exact}
    assert top[twinned] == pytest.approx(1.0, abs=1e-3) and top[plain] == pytest.approx(1.0, abs=1e-3)


def _one_photo_reference(seed: int = 3, dim: int = 64, fps: float = 3.0):
    """A 12 s reference of three 4 s shots of ONE still photo, each with its own camera move:
    every frame is the photo's vector plus a move-specific drift, so every frame of every shot is
    about equally similar to any copy of the photo (the interchangeable shots of the harness's
    slideshows). Returns (times, unit vectors, frame(t) -> vector interpolated along the moves)."""
    rng = np.random.default_rng(seed)
    photo = rng.normal(size=dim)
    photo /= np.linalg.norm(photo)
    moves = rng.normal(size=(3, dim))
    moves /= np.linalg.norm(moves, axis=1, keepdims=True)
    noise = rng.normal(size=(int(12 * fps), dim)) * 0.02

    def frame(t: float, i: int | None = None) -> np.ndarray:
        shot = min(int(t // 4.0), 2)
        v = photo + 0.7 * moves[shot] * ((t - 4.0 * shot) / 4.0)
        if i is not None:
            v = v + noise[i]
        return v / np.linalg.norm(v)

    times = np.arange(int(12 * fps)) / fps
    vecs = np.stack([frame(t, i) for i, t in enumerate(times)]).astype(np.float32)
    return times, vecs, frame


def _edited_copy(frame, offset: float, speed: float, n: int, seed: int = 5, dim: int = 64):
    """n query frames at 1 fps of t_ref = offset + speed * t, each with the same edit added (a
    caption band or logo: one common vector) and per-frame noise (compression)."""
    rng = np.random.default_rng(seed)
    edit = rng.normal(size=dim)
    edit *= 0.6 / np.linalg.norm(edit)
    qt = np.arange(n, dtype=np.float64)
    q = np.stack([frame(offset + speed * t) + edit + rng.normal(size=dim) * 0.03 for t in qt])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return qt, q.astype(np.float32)


def _match_on(offset: float, speed: float, qt: np.ndarray) -> matching.Match:
    seg = matching.Segment(
        float(qt[0]), float(qt[-1]), offset + speed * qt[0], offset + speed * qt[-1], offset, speed, 0.4, len(qt)
    )
    return matching.Match(video=7, score=0.4, votes=len(qt), query_coverage=1.0, ref_coverage=0.4, segments=[seg])


def test_refine_alignment_moves_a_line_placed_in_the_wrong_shot():
    """A 1.1x copy of 1.4-6.9 s (across the cut at 4 s) placed by the aligner in the third shot at
    half speed -- the harness's combo failure -- moves to the true line; the score, votes and
    query extent stay the aligner's."""
    rt, rv, frame = _one_photo_reference()
    qt, q = _edited_copy(frame, 1.4, 1.1, 6)
    wrong = _match_on(8.5, 0.5, qt)
    out = matching.refine_alignment(wrong, qt, [q], rt, rv)
    s = out.segments[0]
    mid = 2.5
    assert abs((s.offset + s.speed * mid) - (1.4 + 1.1 * mid)) < 0.34  # within one reference frame
    assert s.speed == pytest.approx(1.1, rel=0.1)
    assert (out.score, out.votes, out.video, s.score, s.frames) == (0.4, 6, 7, 0.4, 6)
    assert (s.query_start, s.query_end) == (0.0, 5.0)
    assert s.ref_start == pytest.approx(s.offset) and s.ref_end == pytest.approx(s.offset + 5 * s.speed)
    assert wrong.segments[0].offset == 8.5  # the input is not modified


def test_refine_alignment_uses_the_view_that_carries_the_copy():
    """The copy sits in the mirrored view (an hflipped upload); the plain view is unrelated noise."""
    rt, rv, frame = _one_photo_reference()
    qt, q = _edited_copy(frame, 1.4, 1.1, 6)
    junk = np.random.default_rng(9).normal(size=q.shape).astype(np.float32)
    junk /= np.linalg.norm(junk, axis=1, keepdims=True)
    out = matching.refine_alignment(_match_on(8.5, 0.5, qt), qt, [junk, q], rt, rv)
    s = out.segments[0]
    assert abs((s.offset + s.speed * 2.5) - (1.4 + 1.1 * 2.5)) < 0.34


def test_refine_alignment_keeps_a_correct_line():
    rt, rv, frame = _one_photo_reference()
    qt, q = _edited_copy(frame, 0.5, 1.0, 11)
    out = matching.refine_alignment(_match_on(0.5, 1.0, qt), qt, [q], rt, rv).segments[0]
    # stays within one reference frame (1/3 s) of the true line
    assert abs((out.offset + out.speed * 5) - 5.5) < 0.34 and out.speed == pytest.approx(1.0, rel=0.05)


def _held_frame():
    """One frame held on both sides: a 10 s reference at 3 fps and a 6 s query at 1 fps of the
    same vector. Every line explains the query equally. Returns (rt, rv, qt, q)."""
    v = np.random.default_rng(1).normal(size=32)
    v /= np.linalg.norm(v)
    rt = np.arange(30) / 3.0
    qt = np.arange(6, dtype=np.float64)
    return rt, np.tile(v, (30, 1)).astype(np.float32), qt, np.tile(v, (6, 1)).astype(np.float32)


def test_refine_alignment_keeps_the_aligners_line_when_the_evidence_is_flat():
    """A static reference (one frame held) and a static query: every line explains the query
    equally, so the aligner's placement stands exactly."""
    rt, rv, qt, q = _held_frame()
    m = _match_on(2.0, 1.0, qt)
    assert matching.refine_alignment(m, qt, [q], rt, rv).segments[0] == m.segments[0]


def test_refine_alignment_speed_prior_breaks_a_tie_towards_real_time():
    """A held frame on both sides: every line explains the query equally. The aligner's 0.5x line
    moves to real time under the default prior (a slow line is what near-static content and a
    flattening edit fake); with the prior off the tie keeps the aligner's line."""
    rt, rv, qt, q = _held_frame()
    slow = _match_on(2.0, 0.5, qt)
    assert matching.MatchSettings().refine_speed_prior > 0
    assert matching.refine_alignment(slow, qt, [q], rt, rv).segments[0].speed == pytest.approx(1.0)
    off = matching.MatchSettings(refine_speed_prior=0.0)
    assert matching.refine_alignment(slow, qt, [q], rt, rv, off).segments[0] == slow.segments[0]


def test_line_evidence_structure_term_finds_the_cut():
    """With cross similarity made uninformative (every query frame matches every reference frame
    equally, as when the shots are interchangeable), the self-similarity term alone still puts
    the query's cut on the reference's cut: the true line beats the same speed shifted by one
    second or into the next pair of shots."""
    rt, rv, frame = _one_photo_reference()
    qt, q = _edited_copy(frame, 1.4, 1.1, 6)
    flat = np.ones((len(qt), len(rt)))
    qg, rg = (q @ q.T).astype(np.float64), (rv @ rv.T).astype(np.float64)
    ev = matching.line_evidence(qt, flat, qg, rt, rg, np.array([1.4, 0.4, 2.4, 5.4]), 1.1)
    assert ev[0] > max(ev[1:])
    assert ev[0] > 0.5 * len(qt)  # exp(-unexplained / structure) > 0.5: most of it is explained


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None or not DATA.exists(), reason="needs ffmpeg and opencv-doc")
def test_copy_search_places_degraded_excerpts_where_they_were_cut(tmp_path):
    """A 5 s excerpt re-encoded at 3/4 size and CRF 30 (tests.server.helpers.ffmpeg_subclip, the
    end-to-end benchmark's query) of (a) a clip of distinct blocky scenes, one a second, cut 2.4 s
    in, and (b) opencv-doc's near-static tree.avi, cut 8.88 s in. The aligner placed both right;
    the dense re-alignment moved them to 0.64 s and 16.4 s: compression flattens the excerpt's
    self-similarity to embedding noise, and the structure term, normalised by that spread alone,
    then rewarded lines by chance (MatchSettings.refine_structure_noise)."""
    from frameseek.embed import load_embedder
    from frameseek.modality.frames import copy_search
    from frameseek.pipeline import SamplingSettings, embed_media
    from tests.server.helpers import ffmpeg_subclip, make_video

    emb = load_embedder()
    clip = make_video(tmp_path / "scenes.mp4", seconds=8, seed=100)
    sources = {1: (clip, 2.4), 2: (DATA / "tree.avi", 8.88)}
    index = _native.FlatIndex(emb.dim, "ip")
    refs: dict[int, tuple] = {}
    for vid, (path, _) in sources.items():
        m = embed_media(str(path), emb, SamplingSettings.reference())
        n = len(m)
        twins = m.sets["coarse"]  # stored as the video's vectors n..2n-1, as Storage.add_video does
        ids = (np.uint64(vid) << np.uint64(SAMPLE_BITS)) + np.arange(2 * n, dtype=np.uint64)
        index.add(ids, np.vstack([m.vectors, twins]), groups=np.full(2 * n, vid, np.uint64))
        refs[vid] = (m.timestamps, max(m.duration, 1e-3), m.vectors, twins)

    class References:
        def video(self, vid):
            return refs[vid][:2]

        def dense(self, vid):
            return refs[vid][2:]

    for vid, (path, start) in sources.items():
        excerpt = ffmpeg_subclip(path, start, 5.0, tmp_path / f"excerpt{vid}.mp4")
        q = embed_media(str(excerpt), emb, SamplingSettings.query())
        found = copy_search(
            q.timestamps,
            list(q.sets.values()),
            index,
            References(),
            matching.MatchSettings(),
            max_candidates=3,
            query_interval=1.0,
            ref_interval=1 / 3,
            refine_above=matching.COPY_THRESHOLD,
        )
        assert found and found[0].video == vid
        s = found[0].segments[0]
        mid = (s.query_start + s.query_end) / 2
        assert abs(s.offset + s.speed * mid - (start + mid)) <= 0.6, (vid, s)


def test_refine_alignment_validates_inputs():
    rt, rv, frame = _one_photo_reference()
    qt, q = _edited_copy(frame, 1.4, 1.1, 6)
    m = _match_on(1.4, 1.1, qt)
    with pytest.raises(ValueError):
        matching.refine_alignment(m, qt, [q, q[:3]], rt, rv)  # views of different lengths
    with pytest.raises(ValueError):
        matching.refine_alignment(m, qt, [q], rt, rv[:, :10])  # other dimension
    with pytest.raises(ValueError):
        matching.refine_alignment(m, qt[:4], [q], rt, rv)
    empty = matching.Match(video=7, score=0.4, votes=0, query_coverage=0.0, ref_coverage=None)
    assert matching.refine_alignment(empty, qt, [q], rt, rv) is empty


def test_service_video_matches_refines_with_the_indexed_vectors(tmp_path):
    """SearchByVideo's matcher (Search.video_matches) reads the reference's vectors back
    from the live HNSW index (storage.video_vectors) and reports the dense re-alignment, not the
    aligner's line: on this constructed copy the two differ, and the service must report exactly
    what refine_alignment(align(...)) gives on the original arrays."""
    from frameseek.config import Settings
    from frameseek.service import FrameSeekService

    rt, rv, frame = _one_photo_reference(seed=2)
    qt, q = _edited_copy(frame, 1.4, 1.1, 6, seed=12)
    st, c, vid = _storage_with_reference(tmp_path, rt, rv)
    svc = FrameSeekService(Settings(data_dir=str(tmp_path / "data")), storage=st)
    try:
        got = svc.search.video_matches(c, qt, q, 3, None, 8, 1.0)
    finally:
        for pool in svc.core.pools():
            pool.shutdown(wait=True)
        st.close()
    # the same chain on the original arrays (exact search finds the same 8 neighbours: 36 frames)
    idx = _native.FlatIndex(rv.shape[1], "ip")
    idx.add(
        (np.uint64(vid) << np.uint64(SAMPLE_BITS)) + np.arange(len(rt), dtype=np.uint64),
        rv,
        groups=np.full(len(rt), vid, np.uint64),
    )
    ids, sims = matching.search_neighbors(idx, q, 8)
    groups = np.full(ids.shape, vid, np.uint64)
    times = rt[(ids & np.uint64((1 << SAMPLE_BITS) - 1)).astype(np.int64)]
    s = matching.MatchSettings(frame_k=8)
    aligned = matching.align(
        qt,
        ids,
        groups,
        times,
        sims,
        frame_weights=matching.redundancy_weights(q),
        settings=s,
        ref_durations={vid: 12.0},
        query_interval=1.0,
        ref_interval=1.0 / 3.0,
    )[0]
    refined = matching.refine_alignment(aligned, qt, [q], rt, rv, s)
    assert abs(refined.offset - aligned.offset) > 0.1  # the refinement moved the line here
    assert len(got) == 1 and got[0].video.id == vid
    assert got[0].score == pytest.approx(aligned.score, abs=1e-6)  # scores are the aligner's
    assert got[0].offset == pytest.approx(refined.offset, abs=1e-6)
    assert got[0].speed == pytest.approx(refined.speed, abs=1e-6)
    assert got[0].segments[0].ref_start == pytest.approx(refined.segments[0].ref_start, abs=1e-6)


def test_service_searches_every_query_view_and_samples_the_coarse_view(tmp_path):
    """Search.video_matches votes with every view of the query frames it is given
    (EmbeddedMedia.views: whole, mirror, coarse, crops): a copy whose whole-frame vectors are too
    degraded to vote is found through a second view that still matches. And SearchByVideo's
    sampling asks for the coarse view at Settings.views.query_coarse_scale (0 = off)."""
    from types import SimpleNamespace

    from frameseek.config import Settings
    from frameseek.modality import Purpose
    from frameseek.modality.frames import FRAMES
    from frameseek.service import FrameSeekService
    from frameseek.service.core import Core

    def names(sampling) -> list[str]:
        return [v.name for v in sampling.views]

    def scale(sampling) -> float | None:
        return next((v.scale for v in sampling.views if v.name == "coarse"), None)

    rt, rv, frame = _one_photo_reference(seed=4)
    qt, q = _edited_copy(frame, 1.0, 1.0, 8, seed=14)
    rng = np.random.default_rng(9)
    noise = rng.normal(size=q.shape)
    basis, _ = np.linalg.qr(rv.T.astype(np.float64))  # the span of the reference's frames
    noise -= (noise @ basis) @ basis.T  # noise that no reference frame sees
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    weak = (0.1 * q + noise).astype(np.float32)  # almost all noise: under the vote floor
    weak /= np.linalg.norm(weak, axis=1, keepdims=True)
    assert float(np.max(weak @ rv.T)) < matching.DEFAULT_MIN_SIMILARITY
    st, c, vid = _storage_with_reference(tmp_path, rt, rv)
    svc = FrameSeekService(Settings(data_dir=str(tmp_path / "data")), storage=st)
    off = FrameSeekService(Settings(data_dir=str(tmp_path / "data2"), views={"query_coarse_scale": 0}), storage=st)
    try:
        alone = svc.search.video_matches(c, qt, weak, 3, None, 8, 1.0)
        both = svc.search.video_matches(c, qt, [weak, None, q], 3, None, 8, 1.0)
        coll = SimpleNamespace(sampling={"fps": 3.0})
        clip = Purpose.CLIP_QUERY
        assert scale(svc.core.sampling(coll, clip, 1.0)) == pytest.approx(0.5)
        assert names(svc.core.sampling(coll, clip)) == ["full", "mirror", "coarse", "coarse_mirror"]
        # ingest embeds the coarse twins of the index at Settings.views.index_coarse_scale (0 = off)
        assert names(svc.core.sampling(coll)) == ["full", "coarse"] and scale(svc.core.sampling(coll)) == 0.5
        # SearchByImage: the whole image only (one model pass)
        assert names(svc.core.sampling(coll, Purpose.IMAGE_QUERY)) == ["full"]
        no_twins = SimpleNamespace(settings=Settings(views={"index_coarse_scale": 0}), modality=FRAMES)
        assert names(Core.sampling(no_twins, coll)) == ["full"]
        assert names(off.core.sampling(coll, clip, 1.0)) == ["full", "mirror"]
        # the deblocking view: off by default, on at Settings.views.query_deblock_sigma, never for ingest
        assert "deblock" not in names(svc.core.sampling(coll, clip, 1.0))
        deblock = FrameSeekService(
            Settings(data_dir=str(tmp_path / "data3"), views={"query_deblock_sigma": 2.0}), storage=st
        )
        blurred = [v for v in deblock.core.sampling(coll, clip, 1.0).views if v.name == "deblock"]
        assert [v.blur_sigma for v in blurred] == [2.0]
        assert names(deblock.core.sampling(coll)) == ["full", "coarse"]
        for pool in deblock.core.pools():
            pool.shutdown(wait=True)
    finally:
        for s in (svc, off):
            for pool in s.core.pools():
                pool.shutdown(wait=True)
        st.close()
    assert all(m.score < 0.05 for m in alone)
    assert len(both) == 1 and both[0].video.id == vid and both[0].score >= matching.COPY_THRESHOLD


def test_copy_search_over_any_index_maps_twins_and_drops_references_that_are_gone():
    """modality.frames.copy_search (the server's and the harness's copy search) over a plain
    FlatIndex: hits on coarse twins (vector n + i) stand for sample i, and a reference the store no
    longer holds (deleted between the kNN and the alignment) is dropped, not matched."""
    from frameseek.ids import sample_ids
    from frameseek.modality.frames import copy_search

    rt, rv, frame = _one_photo_reference(seed=4)
    qt, q = _edited_copy(frame, 2.0, 1.0, 8, seed=14)
    index = _native.FlatIndex(rv.shape[1], "ip")
    n = len(rt)
    for vid in (1, 2):  # the same content twice; video 2 is gone from the store
        index.add(sample_ids(vid, n), rv, groups=np.full(n, vid, np.uint64))
        index.add(sample_ids(vid, n, first=n), rv, groups=np.full(n, vid, np.uint64))  # twins

    class Store:
        def video(self, video):
            return (rt, 12.0) if video == 1 else None

        def dense(self, video):
            return (rv, rv) if video == 1 else None

    ms = copy_search(
        qt,
        [q],
        index,
        Store(),
        matching.MatchSettings(frame_k=16),
        max_candidates=5,
        query_interval=1.0,
        ref_interval=1 / 3,
        refine_above=0.0,
    )
    assert [m.video for m in ms] == [1]
    assert ms[0].score >= matching.COPY_THRESHOLD and abs(ms[0].offset - 2.0) <= 1.0
    seg = ms[0].main
    assert 0.0 <= seg.ref_start <= seg.ref_end <= 12.0  # placed on sample times, never a twin's index
