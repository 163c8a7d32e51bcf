"""Each caller embeds only the views it uses: SearchByImage runs the real model once per query
image (it searches with one vector), SearchByVideo and ingest run it once per view they use."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest

from frameseek.config import Settings
from frameseek.service import FrameSeekService
from frameseek.service.types import SearchOptions
from frameseek.storage import VideoRecord


class CountingEmbedder:
    """The real ONNX embedder, counting model runs (embed_preprocessed calls) and the inputs it embeds."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.runs = self.rows = 0

    def __getattr__(self, name):  # name, dim, backend, input_size, scalable_input, preprocess ...
        return getattr(self.inner, name)

    def embed_preprocessed(self, images):
        self.runs += 1
        self.rows += len(images)
        return self.inner.embed_preprocessed(images)


def _photo() -> bytes:
    from PIL import Image

    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:240, 0:320]
    rgb = np.stack([(x * 0.8) % 255, (y * 1.1) % 255, ((x + y) * 0.5) % 255], axis=2)
    rgb = np.clip(rgb + rng.normal(0, 30, rgb.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def onnx_embedder():
    from frameseek.embed import load_embedder

    try:
        return load_embedder()
    except Exception as exc:  # pragma: no cover - the model ships with `make setup`
        pytest.skip(f"no embedder: {exc}")


def test_search_by_image_runs_the_model_once_per_query_image(tmp_path, onnx_embedder):
    from PIL import Image

    counting = CountingEmbedder(onnx_embedder)
    image = _photo()

    async def scenario():
        svc = FrameSeekService(Settings(data_dir=str(tmp_path / "data"), metrics_address=""), embedder=counting)
        await svc.start()
        try:
            rec = await svc.collections.get("default")
            vec = onnx_embedder.embed([np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))])
            video = VideoRecord(
                id=0,
                collection_id=rec.id,
                kind="image",
                duration=0.0,
                width=320,
                height=240,
                sample_count=1,
                size_bytes=len(image),
                content_sha256="a" * 64,
            )
            vid = svc.storage.add_video(rec.id, video, np.zeros(1), vec.astype(np.float32)).id
            counting.runs = counting.rows = 0
            hits, _ = await svc.search.by_image("default", image, SearchOptions(k=1))
            return hits, vid
        finally:
            await svc.close()

    hits, vid = asyncio.run(scenario())
    assert (counting.runs, counting.rows) == (1, 1)  # one model pass: the whole image, nothing else
    assert hits and hits[0].video.id == vid and hits[0].score > 0.95
