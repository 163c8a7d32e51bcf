"""embed_media's on_sample hook (what the console's thumbnails are made from): every sample that is
embedded, at its time, as the decoder produced it - no second decode."""

from __future__ import annotations

import numpy as np

from tests.server.helpers import make_video, needs_media


@needs_media
def test_on_sample_sees_each_embedded_sample_as_decoded(tmp_path):
    from frameseek.embed import load_embedder
    from frameseek.pipeline import SamplingSettings, embed_media

    clip = make_video(tmp_path / "clip.mp4", seconds=4, seed=3)
    seen: list[tuple[float, tuple, np.dtype]] = []
    media = embed_media(
        str(clip),
        load_embedder(),
        SamplingSettings(fps=2.0),
        on_sample=lambda t, rgb: seen.append((t, rgb.shape, rgb.dtype)),
    )
    assert len(media) == 8
    assert [t for t, _, _ in seen] == media.timestamps.tolist()
    assert all(shape[2] == 3 and len(shape) == 3 and dtype == np.uint8 for _, shape, dtype in seen)
