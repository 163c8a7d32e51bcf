"""Input normalisation: a path, bytes or a binary stream becomes something PyAV / PIL can open.

Also sniffs the first bytes so that errors can say *what* failed: bytes that look like a known
container but do not open are CORRUPT_MEDIA, bytes that look like nothing we know are NOT_MEDIA.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import MediaError, MediaErrorReason

MediaSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

#: How many leading bytes the sniffers look at.
SNIFF_BYTES = 64


class MediaLimits(BaseModel):
    """Guards against hostile or absurd inputs. Defaults admit 8K video and 2+ hour files."""

    model_config = ConfigDict(frozen=True)

    max_width: int = Field(7680, gt=0, description="widest accepted frame, pixels")
    max_height: int = Field(7680, gt=0, description="tallest accepted frame, pixels")
    max_pixels: int = Field(7680 * 4320, gt=0, description="largest accepted width*height")
    max_duration_s: float | None = Field(
        6 * 3600.0,
        gt=0,
        description="longest accepted video (the container header's duration, and every "
        "decoded frame's time where the header has none or lies); None = no limit",
    )
    stall_timeout_s: float = Field(
        30.0, gt=0, description="DECODE_TIMEOUT when the decoder produces nothing for this long"
    )
    decode_timeout_s: float | None = Field(
        None, gt=0, description="DECODE_TIMEOUT when a whole file takes longer than this; None = no limit"
    )
    max_consecutive_decode_errors: int = Field(
        50, ge=0, description="packets that fail to decode in a row before the file counts as corrupt"
    )

    def check_duration(self, seconds: float, what: str) -> None:
        """Raise DURATION_TOO_LONG when media time `seconds` passes the limit."""
        if self.max_duration_s is not None and seconds > self.max_duration_s:
            raise MediaError(
                MediaErrorReason.DURATION_TOO_LONG,
                f"{what}: {seconds:.0f} s or more exceeds the limit of {self.max_duration_s:.0f} s",
            )

    def check_resolution(self, width: int, height: int, what: str) -> None:
        """Raise RESOLUTION_TOO_LARGE (or CORRUPT_MEDIA for non-positive sizes)."""
        if width <= 0 or height <= 0:
            raise MediaError(MediaErrorReason.CORRUPT_MEDIA, f"{what}: invalid frame size {width}x{height}")
        if width > self.max_width or height > self.max_height or width * height > self.max_pixels:
            raise MediaError(
                MediaErrorReason.RESOLUTION_TOO_LARGE,
                f"{what}: {width}x{height} exceeds the limit "
                f"({self.max_width}x{self.max_height}, {self.max_pixels} pixels)",
            )


Kind = Literal["image", "container", "unknown"]


def sniff(head: bytes) -> tuple[Kind, str]:
    """Classify the first bytes of an input: ('image', 'jpeg'|'png'|'webp'|...),
    ('container', 'mp4'|'matroska'|'avi'|...) or ('unknown', '')."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "container", "gif"  # possibly animated: FFmpeg decodes it as video
    if head.startswith(b"BM") and len(head) >= 26:
        return "image", "bmp"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "container", "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "container", "matroska"
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "container", "avi"
    if head.startswith(b"OggS"):
        return "container", "ogg"
    if head.startswith(b"FLV"):
        return "container", "flv"
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"\x00\x00\x01\xb3"):
        return "container", "mpeg"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "container", "mpegts"
    if head.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")):
        return "container", "annexb"  # raw H.264/HEVC elementary stream
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "container", "asf"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "container", "mp3"
    if head.startswith(b"fLaC"):
        return "container", "flac"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "container", "wav"
    return "unknown", ""


@dataclass
class OpenedSource:
    """A normalised input: what to hand to av.open / PIL, a display name, and the sniffed kind."""

    target: str | BinaryIO  # a filesystem path or a seekable binary stream positioned at 0
    name: str
    kind: Kind
    fmt: str
    path: str | None  # set when the input is a real file (GPU decoders need one)
    size: int | None  # bytes, when known


def open_source(source: MediaSource) -> OpenedSource:
    """Normalise `source` and reject the trivially bad ones (missing file, zero bytes)."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as fh:
                head = fh.read(SNIFF_BYTES * 4)
        except FileNotFoundError:
            raise MediaError(MediaErrorReason.NOT_FOUND, f"{path}: no such file") from None
        except IsADirectoryError:
            raise MediaError(MediaErrorReason.NOT_FOUND, f"{path}: is a directory") from None
        except OSError as exc:
            raise MediaError(MediaErrorReason.NOT_FOUND, f"{path}: cannot read ({exc.strerror})") from None
        if size == 0:
            raise MediaError(MediaErrorReason.EMPTY_MEDIA, f"{path}: file is empty (0 bytes)")
        kind, fmt = sniff(head)
        return OpenedSource(path, path, kind, fmt, path, size)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise MediaError(MediaErrorReason.EMPTY_MEDIA, "<bytes>: input is empty (0 bytes)")
        kind, fmt = sniff(data[: SNIFF_BYTES * 4])
        return OpenedSource(io.BytesIO(data), "<bytes>", kind, fmt, None, len(data))
    if hasattr(source, "read"):
        stream: BinaryIO = source  # type: ignore[assignment]
        name = str(getattr(stream, "name", "<stream>"))
        seekable = bool(getattr(stream, "seekable", lambda: False)())
        if seekable:
            start = stream.tell()
            head = stream.read(SNIFF_BYTES * 4)
            stream.seek(start)
            if start:
                # PyAV reads from the stream's current position, but seeks are absolute: hand it
                # a view that starts at 0 so container offsets stay right.
                data = stream.read()
                stream = io.BytesIO(data)
        else:
            # Demuxers (MP4 in particular) need to seek; buffer non-seekable streams in memory.
            data = stream.read()
            stream = io.BytesIO(data)
            head = data[: SNIFF_BYTES * 4]
        if not head:
            raise MediaError(MediaErrorReason.EMPTY_MEDIA, f"{name}: stream is empty (0 bytes)")
        kind, fmt = sniff(head)
        return OpenedSource(stream, name, kind, fmt, None, None)
    raise TypeError(f"unsupported media source type: {type(source).__name__}")
