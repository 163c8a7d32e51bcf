"""The audio modality: a video's soundtrack as Chromaprint sub-fingerprints, matched by bit error rate.

- extracts: the first audio track of the media (`frameseek.media.audio.soundtrack`: PyAV decodes
  and resamples, Chromaprint fingerprints; about 8 sub-fingerprints per second); a video without
  audio has none, and is indexed without;
- embeds: nothing to embed (the sub-fingerprints are the representation);
- indexes: no vectors in the storage's modality index (the collection's spec is `{}`): the
  sub-fingerprints are the payload of the video's `ModalityData` (after the seconds of audio
  decoded: float64, then uint32 values, little-endian), and the
  service keeps them in a native `FingerprintIndex` per collection (inverted index over 16-bit
  bands) that follows the storage's commits;
- aggregates: `match` -- band votes -> candidate offsets -> BER verification in the native core,
  then a score in [0, 1] (1 - 2 x BER: 0 is chance agreement, 1 identical) and seconds.

Collection flag: `audio` (off by default; `CreateCollection` with `Collection.audio`).
"""

from __future__ import annotations

import dataclasses
import struct
import threading
from typing import TYPE_CHECKING

import numpy as np

from .. import _native
from ..storage import ModalityData

if TYPE_CHECKING:  # the media stack (PyAV) is imported on first use, as for frames
    from ..media import MediaLimits, MediaSource
    from ..media.audio import Soundtrack


#: the stored payload's header: seconds of audio decoded
_HEADER = struct.Struct("<d")


@dataclasses.dataclass(frozen=True)
class AudioMatch:
    """Where a query's audio lies in one video's soundtrack."""

    video: int
    score: float  # 1 - 2 x ber, in [0, 1]
    ber: float  # bit error rate over the matched stretch
    query_start: float  # seconds
    reference_start: float  # seconds
    duration: float  # seconds matched

    @property
    def offset(self) -> float:
        """Reference time minus query time, seconds."""
        return self.reference_start - self.query_start


def score_of(ber: float) -> float:
    """The calibrated score of a bit error rate: 0 at chance (0.5), 1 for identical bits."""
    return float(min(1.0, max(0.0, 1.0 - 2.0 * ber)))


class AudioModality:
    """Soundtracks (module docstring); `AUDIO` is the instance the service uses."""

    name = "audio"
    collection_flag: str | None = "audio"

    def extract(
        self, source: MediaSource, limits: MediaLimits | None = None, cancel: threading.Event | None = None
    ) -> Soundtrack | None:
        """The soundtrack's fingerprint, or None when the media has no audio track."""
        from ..media.audio import soundtrack

        return soundtrack(source, limits, cancel)

    def stored(self, track: Soundtrack) -> ModalityData:
        """What storage keeps of a soundtrack: item times, and as the payload the seconds of audio
        decoded (float64) followed by the sub-fingerprints (uint32), little-endian."""
        payload = _HEADER.pack(track.duration) + np.asarray(track.values, dtype="<u4").tobytes()
        return ModalityData(times=track.times, vectors=None, payload=payload)

    @staticmethod
    def seconds(data: ModalityData) -> float:
        """The seconds of audio a stored soundtrack was fingerprinted from."""
        return float(_HEADER.unpack_from(data.payload)[0])

    @staticmethod
    def fingerprint(data: ModalityData) -> np.ndarray:
        """The sub-fingerprints (uint32) of a stored soundtrack."""
        return np.frombuffer(data.payload, dtype="<u4", offset=_HEADER.size).astype(np.uint32)

    def match(
        self,
        index: _native.FingerprintIndex,
        query: Soundtrack,
        *,
        k: int,
        min_score: float,
        min_match_seconds: float,
    ) -> list[AudioMatch]:
        """The videos of `index` whose soundtrack contains the query, best first, at most `k`, each
        matching for at least `min_match_seconds` with a score of at least `min_score`."""
        params = _native.FingerprintMatchParams()
        params.max_results = int(k)
        params.min_length = max(1, int(round(min_match_seconds / query.item_duration)))
        out = []
        for m in index.search(query.values, params):
            s = score_of(m["ber"])
            if s < min_score:
                continue
            out.append(
                AudioMatch(
                    video=int(m["video"]),
                    score=s,
                    ber=float(m["ber"]),
                    query_start=m["query_start"] * query.item_duration,
                    reference_start=m["ref_start"] * query.item_duration,
                    duration=m["length"] * query.item_duration,
                )
            )
        out.sort(key=lambda x: (-x.score, -x.duration, x.video))
        return out


AUDIO = AudioModality()

__all__ = ["AUDIO", "AudioMatch", "AudioModality", "score_of"]
