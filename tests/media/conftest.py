"""Small media made inside the tests (PyAV encoders), shared per session to keep the suite fast."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import pytest

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
W, H = 128, 96


def textured_frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A detailed frame that changes with i (a shifted random texture plus a moving bar)."""
    rng = np.random.default_rng(1234)
    base = rng.integers(0, 256, (h, w * 2, 3), dtype=np.uint8)
    # smooth the noise a little so every codec keeps it recognisable at small bitrates
    wide = base.astype(np.uint16)
    base = ((wide + np.roll(base, 1, 0) + np.roll(base, 1, 1) + np.roll(base, (1, 1), (0, 1))) // 4).astype(np.uint8)
    shift = (i * 3) % w
    f = base[:, shift : shift + w].copy()
    x = (i * 7) % (w - 10)
    f[:, x : x + 10] = (255, 255, 255)
    return f


def write_video(
    path: Path,
    codec: str,
    times: list[float],
    frames: list[np.ndarray] | None = None,
    options: dict | None = None,
    pix_fmt: str = "yuv420p",
    time_base: fractions.Fraction = fractions.Fraction(1, 1000),
    rate: int = 10,
    gop: int | None = None,
) -> Path:
    """Encode frames at the given presentation times (seconds) into `path`."""
    frames = frames if frames is not None else [textured_frame(i) for i in range(len(times))]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = pix_fmt
        if gop is not None:
            stream.codec_context.gop_size = gop
        # AVI is constant-rate: its time base must be one frame, or the muxer pads with empty frames.
        stream.codec_context.time_base = fractions.Fraction(1, rate) if path.suffix == ".avi" else time_base
        tb = stream.codec_context.time_base
        for t, img in zip(times, frames):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = round(t / tb)
            vf.time_base = tb
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


CODECS = {
    # name: (encoder, container suffix, options)
    "h264_mp4": ("libx264", "mp4", {"preset": "ultrafast"}),
    "h264_mov": ("libx264", "mov", {"preset": "ultrafast"}),
    "hevc_mkv": ("libx265", "mkv", {"preset": "ultrafast", "x265-params": "log-level=none"}),
    "vp9_webm": ("libvpx-vp9", "webm", {"deadline": "realtime", "cpu-used": "8"}),
    "av1_mkv": ("libsvtav1", "mkv", {"preset": "12"}),
    "mpeg4_avi": ("mpeg4", "avi", {"b": "1500k"}),
}


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def clips(media_dir) -> dict[str, Path]:
    """4 s at 10 fps in every codec/container pair the encoders here allow."""
    out = {}
    times = [i / 10 for i in range(40)]
    for name, (enc, ext, opts) in CODECS.items():
        if enc not in av.codecs_available:
            continue
        out[name] = write_video(media_dir / f"{name}.{ext}", enc, times, options=opts, rate=10)
    return out


@pytest.fixture(scope="session")
def h264_clip(clips) -> Path:
    return clips["h264_mp4"]


@pytest.fixture(scope="session")
def vfr_clip(media_dir) -> tuple[Path, list[float]]:
    """Variable frame rate: irregular gaps, a 1.4 s hold, bursts."""
    times = [0.0, 0.1, 0.15, 0.2, 0.9, 1.0, 1.05, 2.45, 2.5, 2.6, 3.0, 3.033, 3.066, 3.1]
    path = write_video(media_dir / "vfr.mkv", "libx264", times, options={"preset": "ultrafast", "bf": "0"})
    return path, times


@pytest.fixture(scope="session")
def black_intro_clip(media_dir) -> Path:
    """2 s of black, then 2 s of content, at 10 fps."""
    frames = [np.zeros((H, W, 3), np.uint8)] * 20 + [textured_frame(i) for i in range(20)]
    return write_video(
        media_dir / "intro.mp4", "libx264", [i / 10 for i in range(40)], frames, options={"preset": "ultrafast"}
    )


@pytest.fixture(scope="session")
def gop_clip(media_dir) -> Path:
    """Key frame every 10 frames (1 s at 10 fps), no scene-cut key frames."""
    return write_video(
        media_dir / "gop.mp4",
        "libx264",
        [i / 10 for i in range(40)],
        options={"preset": "ultrafast", "sc_threshold": "0", "x264-params": "keyint=10:min-keyint=10:scenecut=0"},
        gop=10,
    )


@pytest.fixture(scope="session")
def audio_only(media_dir) -> Path:
    path = media_dir / "audio.mka"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mp2", rate=44100)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(
                (np.sin(np.arange(1152) / 10.0)[None, :] * 3000).astype(np.int16).repeat(2, 0).reshape(1, -1),
                format="s16",
                layout="stereo",
            )
            frame.sample_rate = 44100
            frame.pts = i * 1152
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    return path


@pytest.fixture(scope="session")
def empty_video_stream(media_dir) -> Path:
    """An AVI file with a video stream header and no frames."""
    path = media_dir / "nopackets.avi"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        out.start_encoding()
    return path


@pytest.fixture(scope="session")
def unsupported_codec_avi(clips, media_dir) -> Path:
    """An MPEG-4 AVI whose FourCC is rewritten to one no decoder knows."""
    data = clips["mpeg4_avi"].read_bytes()
    for tag in (b"FMP4", b"DIVX", b"XVID", b"DX50", b"mp4v"):
        data = data.replace(tag, b"ZQZQ")
    path = media_dir / "unknown_codec.avi"
    path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def images(media_dir) -> dict[str, Path]:
    from PIL import Image

    img = Image.fromarray(textured_frame(3, 160, 120))
    out = {}
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")):
        p = media_dir / f"still.{ext}"
        img.save(p, fmt)
        out[ext] = p
    return out


@pytest.fixture(scope="session")
def embedder():
    from frameseek.embed import load_embedder

    return load_embedder()


def expected_decoder(embedder) -> str:
    """The decoder the pipeline picks for an H.264 4:2:0 file and this embedder: NVDEC when the
    embedder takes CUDA tensors and NVDEC runs there, else PyAV (tests run on GPU machines too)."""
    from frameseek.media import nvdec

    device = getattr(embedder, "cuda_device", None)
    return "nvdec" if device is not None and nvdec.nvdec_available(device)[0] else "pyav"
