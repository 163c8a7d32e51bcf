"""Every bad input becomes a typed MediaError with a machine-readable reason — never a crash or hang."""

from __future__ import annotations

import io
import pickle
import threading

import numpy as np
import pytest

from frameseek.media import MediaError, MediaLimits, TimeGridSampler, open_decoder
from frameseek.pipeline import SamplingSettings, embed_media


def reason_of(src, limits=None, embedder=None, **kw) -> str:
    with pytest.raises(MediaError) as info:
        if embedder is None:
            dec = open_decoder(src, limits)
            list(dec.frames(TimeGridSampler(1.0)))
        else:
            embed_media(src, embedder, SamplingSettings(**kw), limits=limits)
    assert info.value.message and info.value.reason in str(info.value)
    return info.value.reason


def test_zero_bytes(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    assert reason_of(p) == "EMPTY_MEDIA"
    assert reason_of(b"") == "EMPTY_MEDIA"
    assert reason_of(io.BytesIO(b"")) == "EMPTY_MEDIA"


def test_missing_file(tmp_path):
    assert reason_of(tmp_path / "nope.mp4") == "NOT_FOUND"
    assert reason_of(tmp_path) == "NOT_FOUND"


@pytest.mark.parametrize(
    "data",
    [b"hello, this is a text file\n" * 50, bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8))],
)
def test_non_media_bytes(data):
    assert reason_of(data) == "NOT_MEDIA"


def test_truncated_mp4_without_index_is_corrupt(h264_clip):
    data = h264_clip.read_bytes()
    assert reason_of(data[: len(data) // 2]) == "CORRUPT_MEDIA"  # moov (index) is at the end


def test_truncated_streamable_file_keeps_what_decodes(clips, embedder):
    data = clips["hevc_mkv"].read_bytes()
    res = embed_media(data[: len(data) // 2], embedder, SamplingSettings(fps=1.0))
    assert 0 < len(res) < 4 and res.timestamps[0] == 0.0


def test_garbage_after_a_valid_header_is_corrupt(h264_clip):
    data = bytearray(h264_clip.read_bytes())
    # keep the container structure, destroy every payload byte after the first 2 KiB
    rng = np.random.default_rng(1)
    data[2048:] = rng.integers(0, 256, len(data) - 2048, dtype=np.uint8).tobytes()
    assert reason_of(bytes(data)) == "CORRUPT_MEDIA"


def test_unsupported_codec(unsupported_codec_avi):
    assert reason_of(unsupported_codec_avi) == "UNSUPPORTED_CODEC"


def test_no_video_stream(audio_only):
    assert reason_of(audio_only) == "NO_VIDEO_STREAM"


def test_zero_duration(empty_video_stream):
    assert reason_of(empty_video_stream) == "ZERO_DURATION"


def test_absurd_resolution(h264_clip, images):
    small = MediaLimits(max_width=64, max_height=64, max_pixels=64 * 64)
    assert reason_of(h264_clip, small) == "RESOLUTION_TOO_LARGE"
    assert reason_of(images["png"], small) == "RESOLUTION_TOO_LARGE"
    assert reason_of(h264_clip, MediaLimits(max_pixels=1000)) == "RESOLUTION_TOO_LARGE"


def test_duration_limit(h264_clip):
    assert reason_of(h264_clip, MediaLimits(max_duration_s=1.0)) == "DURATION_TOO_LONG"


def test_duration_limit_holds_when_the_container_has_no_duration(tmp_path):
    """Issue 17 item 7: MKV written to a pipe (live mode) has no duration in its header; the limit
    is enforced on decoded frame times instead, as soon as one passes it."""
    import subprocess

    import av

    path = tmp_path / "piped.mkv"
    with open(path, "wb") as out:
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=160x120:rate=10",
                "-t",
                "6",
                "-c:v",
                "mpeg4",
                "-f",
                "matroska",
                "-live",
                "1",
                "pipe:1",
            ],
            stdout=out,
            check=True,
        )
    with av.open(str(path)) as c:
        assert c.duration is None and c.streams.video[0].duration is None
    limits = MediaLimits(max_duration_s=2.0)
    dec = open_decoder(path, limits)
    times = []
    with pytest.raises(MediaError) as info:
        for f in dec.frames(TimeGridSampler(10.0)):
            times.append(f.t)
    dec.close()
    assert info.value.reason == "DURATION_TOO_LONG"
    # stopped at the first frame past the limit, not at the end (PyAV); NVDEC checks the demuxed
    # duration before decoding anything
    assert max(times, default=0.0) <= 2.0


def test_corrupt_images(images):
    data = images["jpg"].read_bytes()
    assert reason_of(data[: len(data) // 3]) == "CORRUPT_MEDIA"
    assert reason_of(images["png"].read_bytes()[:40]) == "CORRUPT_MEDIA"


def test_decode_timeout_overall(h264_clip, embedder):
    assert reason_of(h264_clip, MediaLimits(decode_timeout_s=1e-9), embedder) == "DECODE_TIMEOUT"


class StallingStream(io.RawIOBase):
    """A seekable stream whose reads block past `stall_at` bytes (a network source gone quiet)."""

    def __init__(self, data: bytes, stall_at: int, release: threading.Event) -> None:
        self._b = io.BytesIO(data)
        self._stall_at, self._release = stall_at, release

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=0):
        return self._b.seek(pos, whence)

    def tell(self):
        return self._b.tell()

    def read(self, n=-1):
        if self._b.tell() >= self._stall_at:
            self._release.wait(60)  # released by the test's cleanup; never hangs the process
            return b""
        if n is None or n < 0:
            n = self._stall_at - self._b.tell()
        return self._b.read(min(n, self._stall_at - self._b.tell()))


def test_stalled_decoder_times_out_instead_of_hanging(clips, embedder):
    data = clips["hevc_mkv"].read_bytes()
    release = threading.Event()
    try:
        stream = StallingStream(data, len(data) // 2, release)
        limits = MediaLimits(stall_timeout_s=0.5)
        assert reason_of(stream, limits, embedder) == "DECODE_TIMEOUT"
    finally:
        release.set()


def test_input_that_stalls_while_opening_times_out(clips, embedder):
    data = clips["hevc_mkv"].read_bytes()
    release = threading.Event()
    try:
        stream = StallingStream(data, 100, release)  # not even the header arrives
        assert reason_of(stream, MediaLimits(stall_timeout_s=0.3), embedder) == "DECODE_TIMEOUT"
    finally:
        release.set()


def test_media_error_pickles_with_reason():
    e = pickle.loads(pickle.dumps(MediaError("CORRUPT_MEDIA", "x")))
    assert e.reason == "CORRUPT_MEDIA" and e.message == "x"
    with pytest.raises(ValueError):
        MediaError("NOT_A_REASON", "x")
