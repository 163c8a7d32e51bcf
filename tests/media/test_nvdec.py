"""NVDEC decoding: what runs here without a GPU (the stream check, timestamp pairing, the CPU
continuation, the decoder choice) on real files decoded by PyAV, and the GPU tests themselves
(marked `gpu`: NVDEC against PyAV frame by frame, on a fresh thread as the pipeline decodes)."""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from frameseek.media import (
    DecodeStats,
    MediaLimits,
    TimeGridSampler,
    backend_for_consumer,
    nvdec,
    open_decoder,
    open_source,
    plan_indices,
)
from frameseek.media.decode import PyAVDecoder

from .conftest import write_video


def decoded_ticks(path) -> list[int]:
    """Presentation timestamps of every frame PyAV decodes, in presentation order."""
    with av.open(str(path)) as c:
        return sorted(int(f.pts) for f in c.decode(c.streams.video[0]))


def header(path):
    dec = PyAVDecoder(open_source(path), MediaLimits())
    try:
        return dec.info
    finally:
        dec.close()


def test_streams_nvdec_cannot_decode_are_sent_to_the_cpu(media_dir, clips):
    times = [i / 10 for i in range(6)]
    x264 = {"preset": "ultrafast"}
    cases = {
        "h264_422": (write_video(media_dir / "h422.mp4", "libx264", times, options=x264, pix_fmt="yuv422p"), False),
        "h264_10bit": (
            write_video(media_dir / "h10.mp4", "libx264", times, options=x264, pix_fmt="yuv420p10le"),
            False,
        ),
        "h264_420": (clips["h264_mp4"], True),
    }
    if "hevc_mkv" in clips:
        x265 = {"preset": "ultrafast", "x265-params": "log-level=none"}
        cases["hevc_422"] = (
            write_video(media_dir / "e422.mkv", "libx265", times, options=x265, pix_fmt="yuv422p"),
            False,
        )
        cases["hevc_10bit"] = (
            write_video(media_dir / "e10.mkv", "libx265", times, options=x265, pix_fmt="yuv420p10le"),
            True,
        )
    for name, (path, decodable) in cases.items():
        info = header(path)
        why = nvdec.nvdec_rejects(info.codec_family, info.pix_fmt)
        assert (why is None) == decodable, (name, info.pix_fmt, why)
        if not decodable:
            assert info.pix_fmt in why
    assert nvdec.chroma_and_depth("yuv420p10le") == ("420", 10)
    assert nvdec.chroma_and_depth("yuvj444p") == ("444", 8)
    assert nvdec.chroma_and_depth("gray") == ("400", 8)


def test_av1_is_recognised_whatever_decoder_ffmpeg_picks(clips):
    if "av1_mkv" not in clips:
        pytest.skip("no AV1 encoder here")
    info = header(clips["av1_mkv"])
    # FFmpeg decodes AV1 with libdav1d: its name is not the codec's
    assert info.codec != "av1" and info.codec_family == "av1"
    assert nvdec.nvdec_rejects(info.codec_family, info.pix_fmt) is None
    assert nvdec.nvdec_rejects(info.codec, info.pix_fmt) is not None


def test_frame_table_for_nvdec_planning_matches_decoded_pts(vfr_clip, gop_clip, clips):
    # NVDEC plans indices from demuxed packet timestamps: they must equal what decoding yields.
    for path in (vfr_clip[0], gop_clip, clips["h264_mov"]):
        table = nvdec.frame_table(open_source(path))
        assert table.ticks == decoded_ticks(path)
        dec = PyAVDecoder(open_source(path), MediaLimits())
        frames = list(dec.frames(TimeGridSampler(None)))
        np.testing.assert_allclose(table.times, [f.t for f in frames], atol=1e-6)
        for fps in (1.0, 3.0):
            sampled = list(PyAVDecoder(open_source(path), MediaLimits()).frames(TimeGridSampler(fps)))
            planned = [table.times[i] for i in plan_indices(table.times, fps)]
            assert planned == pytest.approx([f.t for f in sampled], abs=1e-6)
    table = nvdec.frame_table(open_source(gop_clip))
    assert [table.times[i] for i in plan_indices(table.times, 0, table.keys)] == pytest.approx([0, 1, 2, 3], abs=1e-6)


def seek_and_decode_one(path, ticks: int) -> int:
    """The timestamp of the first frame decoded after a container seek to `ticks` (what an
    index-addressed decoder that seeks to the nearest key frame hands back)."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        c.seek(ticks, stream=stream, backward=True, any_frame=False)
        for frame in c.decode(stream):
            return int(frame.pts)
    raise AssertionError("nothing decoded")


def test_batches_pair_with_indices_only_when_every_timestamp_matches(gop_clip, media_dir):
    mkv = write_video(
        media_dir / "gop.mkv", "libx264", [i / 10 for i in range(40)], options={"preset": "ultrafast"}, gop=10
    )
    for path in (gop_clip, mkv):
        table = nvdec.frame_table(open_source(path))
        real = decoded_ticks(path)
        batch = plan_indices(table.times, 3.0)
        assert nvdec.batch_mismatch(batch, [real[i] for i in batch], table) is None
        assert nvdec.batch_mismatch(batch, [None] * len(batch), table) is None  # no PTS: the count holds
        # a skipped index: one frame fewer than asked for
        why = nvdec.batch_mismatch(batch, [real[i] for i in batch[1:]], table)
        assert why is not None and "requested" in why
        # an approximate seek: the key frame before the wanted one comes back
        wanted = next(i for i in batch if not table.keys[i])
        got = seek_and_decode_one(path, table.ticks[wanted])
        assert got != table.ticks[wanted]
        ticks = [got if i == wanted else real[i] for i in batch]
        why = nvdec.batch_mismatch(batch, ticks, table)
        assert why is not None and "approximate seek" in why


def test_the_unit_of_nvdecs_timestamps_is_found_at_open(media_dir):
    """The open-time probe tells the stream's time base from milliseconds (the Video Codec SDK
    demuxer's default scale) by the timestamps of two real frames, and rejects anything else."""
    import fractions

    path = write_video(
        media_dir / "tb90k.mp4",
        "libx264",
        [i / 25 for i in range(30)],
        options={"preset": "ultrafast"},
        time_base=fractions.Fraction(1, 90000),
        rate=25,
    )
    table = nvdec.frame_table(open_source(path))
    assert table.time_base != fractions.Fraction(1, 1000)
    real = decoded_ticks(path)
    probe = [0, 1]
    assert nvdec.detect_pts_unit(probe, [real[i] for i in probe], table) == table.time_base
    in_ms = [int(real[i] * table.time_base * 1000) for i in probe]
    assert nvdec.detect_pts_unit(probe, in_ms, table) == fractions.Fraction(1, 1000)
    assert nvdec.detect_pts_unit(probe, probe, table) is None  # frame numbers are no timestamps
    assert nvdec.detect_pts_unit(probe, [None, None], table) == table.time_base  # no PTS: counts only
    # later batches compare in the unit found
    batch = plan_indices(table.times, 5.0)
    ms = [int(real[i] * table.time_base * 1000) for i in batch]
    assert nvdec.batch_mismatch(batch, ms, table, fractions.Fraction(1, 1000)) is None
    assert nvdec.batch_mismatch(batch, ms, table) is not None


@pytest.mark.parametrize("fps", [1.0, 3.0, None])
def test_cpu_continuation_resumes_the_same_grid(gop_clip, fps):
    src = open_source(gop_clip)
    full = [f.t for f in PyAVDecoder(src, MediaLimits()).frames(TimeGridSampler(fps))]
    table = nvdec.frame_table(src)
    planned = [table.times[i] for i in plan_indices(table.times, fps)]
    assert planned == pytest.approx(full, abs=1e-6)
    for cut in (0, 1, len(planned) // 2, len(planned) - 1):
        head = planned[:cut]
        stats = DecodeStats()
        rest = nvdec.cpu_continuation(src, MediaLimits(), stats, fps, False, None, None, head[-1] if head else None)
        tail = [f.t for f in rest]
        assert head + tail == pytest.approx(full, abs=1e-6)
        assert stats.sampled_frames == len(tail) and stats.extra["cpu_decoded_frames"] > 0


def test_nvdec_only_feeds_consumers_on_the_gpu():
    assert backend_for_consumer("auto", None) == ("cpu", 0)  # full frames would come back to the host
    assert backend_for_consumer("auto", 1) == ("auto", 1)
    assert backend_for_consumer("nvdec", None) == ("nvdec", 0)  # asked for: it stands
    assert backend_for_consumer("cpu", 0) == ("cpu", 0)


def test_explicit_nvdec_on_a_missing_device_fails_loudly(h264_clip):
    n, _ = nvdec.cuda_driver_device_count()
    ok, why = nvdec.nvdec_available(n + 3)
    assert not ok and why
    with pytest.raises(nvdec.BackendUnavailable, match="NVDEC requested but unavailable"):
        open_decoder(h264_clip, backend="nvdec", gpu_id=n + 3)


# ------------------------------------------------------------------------------------------------
# On a GPU


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["h264_mp4", "h264_mov", "hevc_mkv", "vp9_webm", "av1_mkv", "mpeg4_avi"])
def test_nvdec_matches_pyav_on_a_fresh_thread(clips, name):
    if name not in clips:
        pytest.skip(f"no encoder for {name} here")
    ok, why = nvdec.nvdec_available()
    if not ok:
        pytest.skip(why)
    path = clips[name]
    cpu = list(open_decoder(path, backend="cpu").frames(TimeGridSampler(3.0)))
    box: dict = {}

    def decode() -> None:  # the pipeline decodes on a thread that never touched CUDA before
        try:
            dec = open_decoder(path, backend="auto")
            box["name"] = dec.name
            box["frames"] = [(f.t, f.to_numpy(), f.on_gpu) for f in dec.frames(TimeGridSampler(3.0))]
            box["extra"] = dict(dec.stats.extra)
        except BaseException as exc:
            box["error"] = exc

    th = threading.Thread(target=decode)
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]
    if box["name"] != "nvdec":
        pytest.skip(f"NVDEC does not take {name} on this GPU")
    assert "nvdec_fallback" not in box["extra"], box["extra"]
    gpu = box["frames"]
    assert [t for t, _, _ in gpu] == pytest.approx([f.t for f in cpu], abs=1e-6)
    assert all(on_gpu for _, _, on_gpu in gpu)
    for (_, img, _), ref in zip(gpu, cpu):
        assert img.shape == ref.image.shape and img.dtype == np.uint8
        assert psnr(img, ref.image) > 30  # colour conversion differs a little, the picture does not
