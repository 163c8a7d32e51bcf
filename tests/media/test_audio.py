"""Soundtrack fingerprints (frameseek.media.audio): PyAV decoding + Chromaprint through ctypes.

Real audio made in the test: espeak-ng speech and a fluidsynth-rendered MIDI song, laid under
opencv-doc's footage with ffmpeg. Chromaprint's own command-line tool (fpcalc, Debian
libchromaprint-tools) is the reference for the raw sub-fingerprints.
"""

from __future__ import annotations

import subprocess
import threading

import numpy as np
import pytest

from benchmarks.audio import sources
from frameseek import _native
from frameseek.media import MediaError
from frameseek.media.audio import CHROMAPRINT_RATE, soundtrack

VTEST = sources.FOOTAGE / "vtest.avi"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    sources.ensure_tools()
    d = tmp_path_factory.mktemp("audio")
    speech = sources.concat_audio(
        d / "speech.wav",
        [sources.speech(d / f"s{i}.wav", sources.TEXTS[i], v) for i, v in enumerate(["en", "de", "fr"])],
    )
    song = sources.music(d / "song.wav", seed=3, seconds=20.0)
    video = sources.with_picture(d / "speech.mp4", speech, VTEST)
    return {"dir": d, "speech": speech, "song": song, "video": video}


def fpcalc_raw(path) -> np.ndarray:
    out = subprocess.run(["fpcalc", "-raw", "-plain", "-length", "0", str(path)], capture_output=True, text=True)
    # Debian's fpcalc 1.5.1 with FFmpeg 5 reports the end of the file as an error (exit 3) after
    # printing the whole fingerprint
    assert out.stdout.strip(), out.stderr
    return np.array([int(x) for x in out.stdout.strip().split(",")], dtype=np.uint32)


def test_raw_fingerprint_equals_fpcalc(media):
    """A 11025 Hz mono WAV goes through neither resampler: the values are Chromaprint's own."""
    wav = media["dir"] / "speech11k.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(media["speech"]), "-ar", str(CHROMAPRINT_RATE), str(wav)], check=True
    )
    s = soundtrack(wav)
    want = fpcalc_raw(wav)
    np.testing.assert_array_equal(s.values, want)
    assert s.item_duration == pytest.approx(1365 / 11025)
    np.testing.assert_allclose(s.times[:3], [0, s.item_duration, 2 * s.item_duration])


def test_video_soundtrack_matches_the_source_audio(media):
    """The AAC soundtrack of an MP4 (44.1 kHz, resampled by FFmpeg here, by Chromaprint in fpcalc)
    fingerprints to nearly the same bits as the WAV it was made from."""
    s = soundtrack(media["video"])
    ref = soundtrack(media["speech"])
    assert s.codec == "aac" and s.duration == pytest.approx(ref.duration, abs=0.1)
    n = min(len(s.values), len(ref.values))
    ber = _native._hamming_for_level("scalar", s.values[:n], ref.values[:n]) / (32 * n)
    assert ber < 0.1


def test_a_video_without_audio_has_no_soundtrack():
    assert soundtrack(VTEST) is None


def test_an_audio_file_is_a_soundtrack(media):
    s = soundtrack(media["song"])
    assert s is not None and s.duration == pytest.approx(20.0, abs=0.05)
    assert len(s.values) > 100


def test_not_media_is_refused(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(MediaError) as e:
        soundtrack(p)
    assert e.value.reason == "NOT_MEDIA"


def test_duration_limit_and_cancel(media):
    from frameseek.media import MediaLimits

    with pytest.raises(MediaError) as e:
        soundtrack(media["song"], MediaLimits(max_duration_s=5.0))
    assert e.value.reason == "DURATION_TOO_LONG"
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(MediaError) as e:
        soundtrack(media["song"], cancel=cancel)
    assert e.value.reason == "CANCELLED"
