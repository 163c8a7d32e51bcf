"""Decoding: codecs, containers, timestamps, sampling density, still images, input kinds.

These test the CPU decoder (PyAV) and ask for it: on a machine with NVDEC, `auto` would decode
on the GPU (tests/media/test_nvdec.py compares the two there)."""

from __future__ import annotations

import io
import json
import subprocess

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frameseek.media import (
    MediaLimits,
    TimeGridSampler,
    nvdec,
    open_decoder,
    open_source,
    plan_indices,
    select_backend,
)

from .conftest import OPENCV_DATA, H, W, write_video


def decode_times(src, fps=0.0, keyframes_only=False):
    dec = open_decoder(src, backend="cpu")
    try:
        frames = list(dec.frames(TimeGridSampler(fps), keyframes_only))
    finally:
        dec.close()
    return dec, frames


@pytest.mark.parametrize("name", ["h264_mp4", "h264_mov", "hevc_mkv", "vp9_webm", "av1_mkv", "mpeg4_avi"])
def test_every_codec_and_container_decodes_with_exact_timestamps(clips, name):
    if name not in clips:
        pytest.skip(f"no encoder for {name} in this PyAV build")
    dec, frames = decode_times(clips[name])
    assert dec.name == "pyav"
    assert [f.shape for f in frames] == [(H, W)] * 40
    np.testing.assert_allclose([f.t for f in frames], np.arange(40) / 10, atol=1e-3)
    assert all(f.image.dtype == np.uint8 and f.image.shape == (H, W, 3) for f in frames)
    # lossy but recognisably the same picture: the bright bar sits where it was drawn
    col = frames[5].image[H // 2, :, :].mean(axis=1)
    assert abs(int(np.argmax(np.convolve(col, np.ones(10), "valid"))) - 35) <= 3


@pytest.mark.parametrize("fps", [1.0, 3.0, 2.5])
def test_time_grid_density(h264_clip, fps):
    _, frames = decode_times(h264_clip, fps)
    ts = np.array([f.t for f in frames])
    # the first frame at or after each tick k/fps, for every tick inside the 4 s clip
    ticks = np.arange(0, 4.0 - 1e-9, 1 / fps)
    src = np.arange(40) / 10
    expected = sorted({float(src[np.searchsorted(src, t - 1e-3)]) for t in ticks if t <= src[-1] + 1e-9})
    np.testing.assert_allclose(ts, expected, atol=1e-3)


def test_vfr_timestamps_come_from_pts_not_frame_counts(vfr_clip):
    path, times = vfr_clip
    _, frames = decode_times(path)
    np.testing.assert_allclose([f.t for f in frames], times, atol=1e-3)
    _, frames = decode_times(path, fps=1.0)
    # ticks 0,1,2,3 -> first frame at/after each: 0.0, 1.0, (2 -> 2.45), 3.0
    np.testing.assert_allclose([f.t for f in frames], [0.0, 1.0, 2.45, 3.0], atol=1e-3)


def ffprobe_best_effort_times(path) -> list[float]:
    probe = json.loads(
        subprocess.run(
            [
                "ffprobe",
                "-v",
                "quiet",
                "-select_streams",
                "v:0",
                "-show_entries",
                "frame=best_effort_timestamp_time",
                "-of",
                "json",
                str(path),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    return [float(f["best_effort_timestamp_time"]) for f in probe["frames"]]


def test_opencv_tree_avi_vfr_matches_ffprobe():
    path = OPENCV_DATA / "tree.avi"
    if not path.exists():
        pytest.skip("opencv-doc not installed")
    _, frames = decode_times(path)
    ref = ffprobe_best_effort_times(path)
    assert len(frames) == len(ref)
    np.testing.assert_allclose([f.t for f in frames], np.array(ref) - ref[0], atol=1e-4)
    gaps = np.diff(ref)
    assert gaps.max() > 1.5 * gaps.min()  # it is VFR indeed


def test_broken_pts_are_corrected_like_ffmpeg(tmp_path):
    # opencv-doc's box.mp4 has presentation timestamps that go backwards; FFmpeg's best-effort
    # timestamps (and ours) fall back to dts, so no frame is lost to "non-monotonic" sampling.
    gz = OPENCV_DATA.parent.parent / "opencv4" / "html" / "box.mp4.gz"
    if not gz.exists():
        pytest.skip("opencv-doc not installed")
    import gzip

    path = tmp_path / "box.mp4"
    path.write_bytes(gzip.decompress(gz.read_bytes()))
    dec, frames = decode_times(path)
    ref = ffprobe_best_effort_times(path)
    assert dec.stats.decoded_frames == len(ref)
    # the sampler never steps back in time: FFmpeg's own guess repeats 15.151 s on the last frame
    monotonic = [t for i, t in enumerate(ref) if all(t > u for u in ref[:i])]
    assert len(ref) - len(monotonic) == 1
    np.testing.assert_allclose([f.t for f in frames], np.array(monotonic) - ref[0], atol=1e-4)


def test_keyframes_only_skips_non_key_decoding(gop_clip):
    dec, frames = decode_times(gop_clip, fps=0.0, keyframes_only=True)
    np.testing.assert_allclose([f.t for f in frames], [0.0, 1.0, 2.0, 3.0], atol=1e-3)
    assert all(f.key for f in frames)
    assert dec.stats.decoded_frames == 4


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=1e-3, max_value=2.0), min_size=1, max_size=200),
    fps=st.floats(min_value=0.1, max_value=30.0),
)
def test_sampler_properties(gaps, fps):
    times = np.cumsum([0.0] + gaps).tolist()
    kept = [times[i] for i in plan_indices(times, fps)]
    assert kept[0] == times[0] == 0.0
    assert kept == sorted(set(kept))

    # at most one sample per grid tick, and no tick between two samples is left unserved
    def tick(t):
        return int(np.floor((t + TimeGridSampler.EPS) * fps))

    ticks = [tick(t) for t in kept]
    assert len(ticks) == len(set(ticks))
    # every frame that was skipped shares its tick with the sample before it
    for a, b in zip(kept, kept[1:] + [float("inf")]):
        assert all(tick(t) == tick(a) for t in times if a < t < b)


def test_still_images_are_one_frame_items(images):
    for path in images.values():
        dec, frames = decode_times(path, fps=1.0)
        assert dec.name == "pil" and dec.info.is_image and dec.info.codec in ("jpeg", "png", "webp")
        assert len(frames) == 1 and frames[0].t == 0.0 and frames[0].image.shape == (120, 160, 3)


def test_path_bytes_and_streams_decode_the_same(h264_clip):
    _, a = decode_times(h264_clip, 1.0)
    _, b = decode_times(h264_clip.read_bytes(), 1.0)
    with open(h264_clip, "rb") as fh:
        _, c = decode_times(fh, 1.0)

    class Unseekable(io.RawIOBase):  # a socket-like stream: read() only
        def __init__(self, data):
            self._b = io.BytesIO(data)

        def readable(self):
            return True

        def read(self, n=-1):
            return self._b.read(n)

    _, d = decode_times(Unseekable(h264_clip.read_bytes()), 1.0)
    for other in (b, c, d):
        assert [f.t for f in other] == [f.t for f in a]
        assert all(np.array_equal(x.image, y.image) for x, y in zip(a, other))


def test_decoder_selection_falls_back_to_cpu_with_reason(h264_clip, caplog):
    ok, why = nvdec.nvdec_available()
    if ok:
        pytest.skip("this machine has NVDEC")
    src = open_source(h264_clip)
    assert select_backend(src, None, "auto") == ("pyav", why)
    assert select_backend(src, None, "cpu")[0] == "pyav"
    with pytest.raises(nvdec.BackendUnavailable, match="NVDEC requested but unavailable"):
        select_backend(src, None, "nvdec")
    with pytest.raises(nvdec.BackendUnavailable):
        open_decoder(h264_clip, backend="nvdec")
    assert open_decoder(h264_clip, backend="auto").name == "pyav"
    # the driver probe itself runs for real (ctypes on libcuda) and explains itself
    n, reason = nvdec.cuda_driver_device_count()
    assert isinstance(n, int) and reason


def test_limits_are_pydantic_and_validated():
    with pytest.raises(ValueError):
        MediaLimits(max_width=0)
    assert MediaLimits().max_width >= 3840


def test_sparse_sampling_skips_non_reference_frames(media_dir):
    # H.264 with fixed, non-reference B-frames (no pyramid): at 1 fps on a 10 fps clip the codec
    # may skip them; each sample still lands within two frame periods of its tick. At 5 fps
    # (fewer than NONREF_MIN_FRAMES_PER_SAMPLE frames per tick) every frame is decoded.
    path = write_video(
        media_dir / "bframes.mp4",
        "libx264",
        [i / 10 for i in range(60)],
        options={"preset": "medium", "x264-params": "bframes=3:b-pyramid=none:b-adapt=0:log-level=none"},
    )
    with av.open(str(path)) as c:
        pict = [av.video.frame.PictureType(f.pict_type) for f in c.decode(video=0)]
    assert pict.count(av.video.frame.PictureType.B) >= 20  # the clip really has B-frames to skip

    sparse, frames = decode_times(path, fps=1.0)
    ticks = np.arange(6.0)
    assert len(frames) == 6 and all(t <= f.t <= t + 0.2 + 1e-6 for t, f in zip(ticks, frames))
    assert sparse.stats.decoded_frames <= 60 - 20

    dense, frames5 = decode_times(path, fps=5.0)
    assert dense.stats.decoded_frames == 60
    np.testing.assert_allclose([f.t for f in frames5], np.arange(30) / 5, atol=1e-3)


def test_size_hint_downscales_in_the_decoder_with_unchanged_timestamps(media_dir, vfr_clip, images):
    """A size hint makes the decoder convert + downscale in one pass: same frames, same times,
    the hinted size; never an upscale; stills ignore it (the embedder resizes them)."""
    from PIL import Image

    from frameseek.embed import PreprocessSpec

    from .conftest import textured_frame

    big = write_video(
        media_dir / "vga.mp4",
        "libx264",
        [i / 10 for i in range(20)],
        [textured_frame(i, 640, 480) for i in range(20)],
        options={"preset": "ultrafast"},
    )
    hint = PreprocessSpec().output_hw
    for fps in (0.0, 2.0):
        dec = open_decoder(big, backend="cpu")
        plain = list(dec.frames(TimeGridSampler(fps)))
        dec.close()
        dec = open_decoder(big, backend="cpu")
        hinted = list(dec.frames(TimeGridSampler(fps), size_hint=hint))
        dec.close()
        assert [f.t for f in hinted] == [f.t for f in plain] and len(plain) == (20 if fps == 0 else 4)
        assert all(f.image.shape == (288, 384, 3) and f.source_hw == (480, 640) for f in hinted)
        assert all(f.image.shape == (480, 640, 3) and f.source_hw is None for f in plain)
        # the same picture as resizing the full-size frame (antialiased). Compared on luma: this
        # noise-like texture has full-band chroma, which the one-pass path scales from its 4:2:0
        # plane instead of upsampling it first (RGB differs by ~6 levels here, luma by ~0.5)
        ref = np.asarray(Image.fromarray(plain[1].image).resize((384, 288), Image.Resampling.BILINEAR))
        luma = np.array([0.299, 0.587, 0.114])
        assert np.abs(ref @ luma - hinted[1].image @ luma).mean() < 1.5

    # VFR timestamps are untouched by downscaling
    path, times = vfr_clip
    dec = open_decoder(path, backend="cpu")
    half = list(dec.frames(TimeGridSampler(0.0), size_hint=lambda h, w: (h // 2, w // 2)))
    dec.close()
    np.testing.assert_allclose([f.t for f in half], times, atol=1e-3)
    assert {f.image.shape for f in half} == {(H // 2, W // 2, 3)}

    # an upscale (in either direction) is left to the embedder: the frame comes at full size
    for up in (lambda h, w: (2 * h, 2 * w), lambda h, w: (h // 2, w + 1), PreprocessSpec().output_hw):
        dec = open_decoder(path, backend="cpu")
        f = next(iter(dec.frames(TimeGridSampler(1.0), size_hint=up)))
        dec.close()
        assert f.image.shape == (H, W, 3) and f.source_hw is None

    dec = open_decoder(images["png"], backend="cpu")
    (still,) = dec.frames(TimeGridSampler(1.0), size_hint=lambda h, w: (h // 2, w // 2))
    assert still.image.shape == (120, 160, 3)
