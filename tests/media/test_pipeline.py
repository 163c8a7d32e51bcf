"""embed_media: sampling, blank drop, dedup, progress, cancellation, back-pressure, CLI."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from frameseek.media import MediaError
from frameseek.pipeline import EmbeddedMedia, SamplingSettings, View, embed_media, frame_views

from .conftest import expected_decoder


def test_query_and_reference_sampling(h264_clip, embedder):
    q = embed_media(h264_clip, embedder, SamplingSettings.query())
    r = embed_media(h264_clip, embedder, SamplingSettings.reference())
    assert isinstance(q, EmbeddedMedia) and q.decoder == expected_decoder(embedder)
    assert q.embedder == f"sscd_distilled@{embedder.backend}"
    np.testing.assert_allclose(q.timestamps, [0, 1, 2, 3], atol=1e-3)
    assert len(r) == 12 and np.all(np.diff(r.timestamps) <= 1 / 3 + 0.1 + 1e-6)
    assert q.vectors.shape == (4, 512) and q.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q.vectors, axis=1), 1, atol=1e-5)
    assert (q.width, q.height, q.is_image) == (128, 96, False)
    assert q.duration == pytest.approx(4.0, abs=1e-3)
    # the query samples are among the reference samples, with the same embeddings
    idx = [int(np.argmin(np.abs(r.timestamps - t))) for t in q.timestamps]
    np.testing.assert_allclose(r.vectors[idx], q.vectors, atol=1e-5)
    for k in ("decode_s", "preprocess_s", "embed_s", "wall_s"):
        assert q.stats[k] >= 0
    assert q.stats["decoded_frames"] == 40 and q.stats["sampled_frames"] == 4


def test_black_intro_is_dropped(black_intro_clip, embedder):
    res = embed_media(black_intro_clip, embedder, SamplingSettings(fps=1.0))
    np.testing.assert_allclose(res.timestamps, [2.0, 3.0], atol=1e-3)
    assert res.dropped_blank == 2 and res.stats["blank_reasons"] == {"dark": 2}
    kept = embed_media(black_intro_clip, embedder, SamplingSettings(fps=1.0, drop_blank=False))
    assert len(kept) == 4
    # the reason the filter exists: black frames are near-identical to each other
    assert float(kept.vectors[0] @ kept.vectors[1]) > 0.95


def test_dedup_drops_near_identical_consecutive_samples(media_dir, embedder):
    from .conftest import textured_frame, write_video

    frames = [textured_frame(0)] * 30 + [textured_frame(100)] * 10  # 3 s still, then a new shot
    path = write_video(
        media_dir / "still_then_cut.mp4",
        "libx264",
        [i / 10 for i in range(40)],
        frames,
        options={"preset": "ultrafast"},
    )
    res = embed_media(path, embedder, SamplingSettings(fps=2.0, dedup_threshold=0.97))
    np.testing.assert_allclose(res.timestamps, [0.0, 3.0], atol=1e-3)
    assert res.dropped_duplicates == 6
    assert len(embed_media(path, embedder, SamplingSettings(fps=2.0))) == 8


def test_images_and_inputs(images, h264_clip, embedder):
    for p in images.values():
        res = embed_media(p, embedder, SamplingSettings())
        assert res.is_image and res.duration == 0.0 and list(res.timestamps) == [0.0] and res.decoder == "pil"
    a = embed_media(h264_clip, embedder)
    b = embed_media(h264_clip.read_bytes(), embedder)
    np.testing.assert_array_equal(a.vectors, b.vectors)


def test_flip_vectors(h264_clip, embedder):
    res = embed_media(h264_clip, embedder, SamplingSettings(fps=1.0, views=frame_views(mirror=True)))
    assert list(res.sets) == ["full", "mirror"] and res.sets["mirror"].shape == res.vectors.shape
    assert not np.allclose(res.sets["mirror"], res.vectors)


def test_query_sampling_adds_a_coarse_view(h264_clip, embedder):
    """SamplingSettings.query() (the server's clip query views) embeds every kept frame and its
    mirror a second time at QUERY_COARSE_SCALE of the model's input size (144 px short side
    instead of 288)."""
    from frameseek.pipeline import QUERY_COARSE_SCALE

    class Recorder(_ShapeRecorder):
        scalable_input = True

        def __init__(self, inner) -> None:
            super().__init__(inner, hint=True)
            self.scales: list[float] = []
            self.inputs: list[tuple[int, ...]] = []

        def preprocess(self, frames, flip=False, scale=1.0):
            self.scales.append(scale)
            out = self.inner.preprocess(frames, flip, scale)
            self.inputs += [im.shape for im in out]
            return out

    rec = Recorder(embedder)
    q = embed_media(h264_clip, rec, SamplingSettings.query())
    n = len(q)
    coarse, coarse_flip = q.sets["coarse"], q.sets["coarse_mirror"]
    assert n == 4 and coarse.shape == coarse_flip.shape == (n, 512)
    assert sorted(set(rec.inputs)) == [(144, 192, 3), (288, 384, 3)]  # the 128x96 clip at both scales
    assert rec.scales.count(QUERY_COARSE_SCALE) == 2 * n and rec.scales.count(1.0) == 2 * n
    np.testing.assert_allclose(np.linalg.norm(coarse, axis=1), 1, atol=1e-5)
    # the same frames, seen coarser: close to the full-scale vectors, but not the same
    cos = np.sum(coarse * q.vectors, axis=1)
    assert np.all(cos > 0.5) and np.all(cos < 0.999)
    assert not np.allclose(coarse_flip, coarse)
    # views: whole, mirror, coarse, coarse mirror (rows aligned with the timestamps)
    assert list(q.sets) == ["full", "mirror", "coarse", "coarse_mirror"]
    views = q.views
    assert len(views) == 4 and views[0] is q.vectors and views[2] is coarse
    # off, or an embedder whose input size is fixed (no scalable_input): no coarse view
    off = embed_media(h264_clip, embedder, SamplingSettings.query(views=frame_views(mirror=True)))
    assert "coarse" not in off.sets and len(off.views) == 2
    np.testing.assert_allclose(off.vectors, q.vectors, atol=1e-6)
    fixed = embed_media(h264_clip, _ShapeRecorder(embedder, hint=True), SamplingSettings.query())
    assert list(fixed.sets) == ["full", "mirror"]
    assert [v.name for v in SamplingSettings().views] == ["full"]
    assert [v.name for v in SamplingSettings.reference().views] == ["full", "coarse"]  # the coarse twins
    for bad in (0.3, 1.5):
        with pytest.raises(ValueError, match="scale"):
            frame_views(coarse_scale=bad)


def test_deblock_sigma_adds_a_blurred_view(h264_clip, embedder):
    """A deblocking view (frame_views(deblock_sigma=...)) embeds every kept frame once more after a Gaussian blur: the
    vectors equal embedding the blurred frames directly, and the view joins `views`."""
    from frameseek.media import open_decoder
    from frameseek.media.sampling import TimeGridSampler
    from frameseek.pipeline import gaussian_blur

    # blurred (and cropped) views need the frames on the host: CPU decoding, asked for (on a GPU
    # machine `auto` would keep NVDEC frames on the device and skip these views)
    q = embed_media(h264_clip, embedder, SamplingSettings(fps=1.0, views=frame_views(deblock_sigma=2.0), decoder="cpu"))
    deblocked = q.sets["deblock"]
    assert deblocked.shape == q.vectors.shape
    views = q.views
    assert len(views) == 2 and views[1] is deblocked
    cos = np.sum(deblocked * q.vectors, axis=1)
    assert np.all(cos > 0.5) and np.all(cos < 0.999)  # the same frames, softer
    dec = open_decoder(str(h264_clip), backend="cpu")
    frames = [np.asarray(f.image) for f in dec.frames(TimeGridSampler(1.0), size_hint=embedder.input_size)]
    dec.close()
    direct = embedder.embed([gaussian_blur(f, 2.0) for f in frames])
    np.testing.assert_allclose(deblocked, direct, atol=1e-4)
    off = embed_media(h264_clip, embedder, SamplingSettings(fps=1.0, decoder="cpu"))
    assert list(off.sets) == ["full"] and len(off.views) == 1
    np.testing.assert_allclose(off.vectors, q.vectors, atol=1e-6)
    for bad in (-1.0, 17.0):
        with pytest.raises(ValueError, match="blur_sigma"):
            View("deblock", blur_sigma=bad)


def test_views_are_declared_and_validated(h264_clip, embedder):
    """A view is data: any declared transform (here a mirrored crop) becomes a vector set equal to
    embedding that transform of the frames directly; names are distinct and the primary first."""
    from frameseek.media import open_decoder
    from frameseek.media.sampling import TimeGridSampler
    from frameseek.regions import crop

    left = View("left_half_mirrored", mirror=True, crop=(0.0, 0.0, 0.5, 1.0))
    q = embed_media(h264_clip, embedder, SamplingSettings(fps=1.0, views=(View("full"), left), decoder="cpu"))
    dec = open_decoder(str(h264_clip), backend="cpu")
    frames = [np.asarray(f.image) for f in dec.frames(TimeGridSampler(1.0), size_hint=embedder.input_size)]
    dec.close()
    direct = embedder.embed([crop(f, (0.0, 0.0, 0.5, 1.0)) for f in frames], flip=True)
    np.testing.assert_allclose(q.sets["left_half_mirrored"], direct, atol=1e-4)
    with pytest.raises(ValueError, match="distinct"):
        SamplingSettings(views=(View("full"), View("full", mirror=True)))
    with pytest.raises(ValueError, match="at least one"):
        SamplingSettings(views=())
    with pytest.raises(ValueError, match="region"):
        SamplingSettings(views=(View("full"), View("region0")))


def test_gaussian_blur_keeps_shape_and_mean_and_softens_edges():
    from frameseek.pipeline import gaussian_blur

    img = np.zeros((40, 60, 3), np.uint8)
    img[:, 30:] = 200
    out = gaussian_blur(img, 2.0)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert abs(float(out.mean()) - float(img.mean())) < 1.0
    row = out[20, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 200 and 0 < row[29] < 200 and 0 < row[30] < 200


def test_max_samples_spreads_a_sparser_grid_over_the_whole_clip(h264_clip, embedder):
    """The 4 s clip has 4 ticks at 1 fps; max_samples=3 widens the grid to 4/3 s over all of it
    (not its first 3 s). The region pass crops the frames of that same grid (a crop of a frame it
    missed would stay a copy of the whole frame's vector), and a bound the clip does not reach
    changes nothing."""
    full = embed_media(h264_clip, embedder, SamplingSettings.query(regions="on"))
    assert full.sample_fps == 1.0 and len(full) == 4
    cut = embed_media(h264_clip, embedder, SamplingSettings.query(regions="on", max_samples=3))
    assert cut.sample_fps == pytest.approx(0.75)
    np.testing.assert_allclose(cut.timestamps, [0.0, 1.4, 2.7], atol=1e-3)  # first frames at 0, 4/3, 8/3 s
    assert cut.stats["sampled_frames"] == 3
    assert len(cut.region_vectors) >= 5  # the grid of 5 crops (and an inset if one is detected)
    for crops in cut.region_vectors:
        for row in range(3):
            assert float(crops[row] @ cut.vectors[row]) < 0.999
    same = embed_media(h264_clip, embedder, SamplingSettings.query(max_samples=4))
    assert same.sample_fps == 1.0
    np.testing.assert_allclose(same.timestamps, full.timestamps)
    assert SamplingSettings.query(max_samples=5).grid_fps(None) == 1.0  # duration unknown: the plain grid
    with pytest.raises(ValueError, match="max_samples"):
        SamplingSettings.query(max_samples=0)


def test_progress_reports_done_and_estimate(h264_clip, embedder):
    calls = []
    res = embed_media(h264_clip, embedder, SamplingSettings(fps=3.0), progress=lambda d, t: calls.append((d, t)))
    assert calls and all(t == 12 for _, t in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == len(res) == 12


def test_cancellation(h264_clip, embedder):
    ev = threading.Event()
    ev.set()
    with pytest.raises(MediaError) as info:
        embed_media(h264_clip, embedder, cancel=ev)
    assert info.value.reason == "CANCELLED"
    ev = threading.Event()
    with pytest.raises(MediaError) as info:
        embed_media(h264_clip, embedder, SamplingSettings(fps=0), progress=lambda d, t: ev.set(), cancel=ev)
    assert info.value.reason == "CANCELLED"


class CountingEmbedder:
    """The real embedder, counting frames preprocessed but not yet embedded (queue occupancy)."""

    def __init__(self, inner):
        self.inner, self.name, self.dim, self.backend, self.batch_size = inner, inner.name, inner.dim, inner.backend, 4
        self.outstanding = self.peak = 0
        self.lock = threading.Lock()

    def preprocess(self, frames, flip=False):
        out = self.inner.preprocess(frames, flip)
        with self.lock:
            self.outstanding += len(out)
            self.peak = max(self.peak, self.outstanding)
        return out

    def embed_preprocessed(self, images):
        out = self.inner.embed_preprocessed(images)
        with self.lock:
            self.outstanding -= len(images)
        return out


def test_back_pressure_bounds_buffered_frames(h264_clip, embedder):
    counting = CountingEmbedder(embedder)
    res = embed_media(h264_clip, counting, SamplingSettings(fps=0, queue_size=3))
    assert len(res) == 40 and counting.outstanding == 0
    # queue_size in the queue, one batch being embedded, one frame waiting on put()
    assert counting.peak <= 3 + counting.batch_size + 1


def test_errors_surface_from_the_decode_thread(tmp_path, embedder):
    p = tmp_path / "x.mp4"
    p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 5000)
    with pytest.raises(MediaError) as info:
        embed_media(p, embedder)
    assert info.value.reason == "CORRUPT_MEDIA"


def test_cli_embed_json(h264_clip, tmp_path, embedder):
    import typer

    from frameseek.media_cli import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        pass

    runner = CliRunner()
    out = runner.invoke(app, ["embed", str(h264_clip), "--fps", "2", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert [round(s["t"], 3) for s in doc["samples"]] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    decoder = expected_decoder(embedder)
    assert len(doc["samples"][0]["vector"]) == 512 and doc["decoder"] == decoder
    assert doc["realtime_factor"] > 0
    text = runner.invoke(app, ["embed", str(h264_clip)])
    assert text.exit_code == 0 and "x realtime" in text.stdout and f"decoder={decoder}" in text.stdout
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a video at all" * 20)
    err = runner.invoke(app, ["embed", str(bad), "--json"])
    assert err.exit_code == 2 and json.loads(err.stdout)["error"]["reason"] == "NOT_MEDIA"


class _ShapeRecorder:
    """The real embedder, recording the frame sizes the pipeline hands to preprocess();
    `hint=False` hides its input_size (an embedder that gives the decoder no size hint)."""

    def __init__(self, inner, hint: bool) -> None:
        self.inner, self.name, self.dim, self.backend = inner, inner.name, inner.dim, inner.backend
        self.batch_size = inner.batch_size
        self.shapes: list[tuple[int, ...]] = []
        if hint:
            self.input_size = inner.input_size

    def preprocess(self, frames, flip=False):
        self.shapes += [f.shape for f in frames]
        return self.inner.preprocess(frames, flip)

    def embed_preprocessed(self, images):
        return self.inner.embed_preprocessed(images)

    def embed(self, frames, flip=False):
        return self.inner.embed(frames, flip)


def test_pipeline_hands_the_model_input_size_to_the_decoder(media_dir, embedder):
    from .conftest import textured_frame, write_video

    path = write_video(
        media_dir / "vga_pipeline.mp4",
        "libx264",
        [i / 10 for i in range(30)],
        [textured_frame(i, 640, 480) for i in range(30)],
        options={"preset": "ultrafast"},
    )
    hinted, plain = _ShapeRecorder(embedder, hint=True), _ShapeRecorder(embedder, hint=False)
    a = embed_media(path, hinted, SamplingSettings(fps=2.0, views=frame_views(mirror=True)))
    b = embed_media(path, plain, SamplingSettings(fps=2.0, views=frame_views(mirror=True)))
    assert set(hinted.shapes) == {(288, 384, 3)}  # arrived at the model's input size
    assert set(plain.shapes) == {(480, 640, 3)}
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    assert (a.width, a.height) == (b.width, b.height) == (640, 480)  # the source size is reported
    assert a.dropped_blank == b.dropped_blank == 0
    assert np.sum(a.vectors * b.vectors, axis=1).min() >= 0.98
    assert np.sum(a.sets["mirror"] * b.sets["mirror"], axis=1).min() >= 0.98


def test_batches_are_held_open_for_the_embedders_batch_wait(h264_clip, embedder):
    """`batch_wait_s` is the embedder's call: a long wait fills every batch (accelerators want
    that); ONNX Runtime on the CPU asks for none (its cost per frame is flat in the batch size)."""
    assert embedder.batch_wait_s == 0.0

    class Recorder(_ShapeRecorder):
        batch_wait_s = 30.0  # far longer than decoding this clip takes: batches always fill

        def __init__(self, inner) -> None:
            super().__init__(inner, hint=True)
            self.batch_size = 4
            self.batches: list[int] = []

        def embed_preprocessed(self, images):
            self.batches.append(len(images))
            return super().embed_preprocessed(images)

    rec = Recorder(embedder)
    res = embed_media(h264_clip, rec, SamplingSettings(fps=2.5))
    assert len(res) == 10 and rec.batches == [4, 4, 2]  # the last batch closes when decoding ends
