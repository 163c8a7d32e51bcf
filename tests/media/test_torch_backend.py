"""The torch embedder (the ONNX model converted by onnx2torch) against ONNX Runtime: on the CPU
here when torch is installed (`make setup-torch`), on CUDA on a GPU machine (marked `gpu`); and
the backend choice, which runs everywhere."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from frameseek.embed import (
    EmbedderSettings,
    OnnxEmbedder,
    TorchEmbedder,
    TorchUnavailable,
    load_embedder,
    select_backend,
    tensorrt_available,
    torch_cuda_available,
    torch_importable,
)

from .conftest import OPENCV_DATA, textured_frame

torch_ok, torch_why = torch_importable()
needs_torch = pytest.mark.skipif(not torch_ok, reason=f"{torch_why}: `make setup-torch` installs it")


def real_frames() -> list[np.ndarray]:
    """Real pictures at the sizes ingest and queries see (video frames, a portrait still)."""
    import av

    frames = []
    with av.open(str(OPENCV_DATA / "vtest.avi")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % 40 == 0:
                frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) == 6:
                break
    frames.append(np.ascontiguousarray(frames[0][:, :300].transpose(1, 0, 2)))  # portrait
    frames.append(textured_frame(3, 400, 300))
    return frames


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def assert_concurrent_calls_agree(embed, jobs: list, expected: list[np.ndarray], repeats: int, atol: float) -> None:
    """Each of `jobs` (lists of frames of different sizes) embedded `repeats` times in a thread of its
    own, all at once: every call returns its job's `expected` embeddings (no call sees another's batch)."""
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            for _ in range(repeats):
                np.testing.assert_allclose(embed(jobs[k]), expected[k], atol=atol)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


@pytest.fixture(scope="module")
def onnx_embedder():
    return load_embedder(EmbedderSettings(backend="onnx"))


@needs_torch
def test_torch_on_the_cpu_gives_onnx_runtimes_embeddings(onnx_embedder):
    torch_emb = TorchEmbedder(EmbedderSettings().resolve_model(), EmbedderSettings(backend="torch"), device="cpu")
    assert torch_emb.dim == onnx_embedder.dim == 512 and torch_emb.cuda_device is None
    frames = real_frames()
    for flip in (False, True):
        ref = onnx_embedder.embed(frames, flip=flip)
        got = torch_emb.embed(frames, flip=flip)
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
        assert cosines(got, ref).min() >= 0.999
    # coarse views (a smaller input) go through the same shared preprocessing
    small_ref = onnx_embedder.embed_preprocessed(onnx_embedder.preprocess(frames, scale=0.5))
    small = torch_emb.embed_preprocessed(torch_emb.preprocess(frames, scale=0.5))
    assert cosines(small, small_ref).min() >= 0.999
    assert torch_emb.embed([]).shape == (0, 512)


@needs_torch
def test_torch_embedder_serves_concurrent_callers(onnx_embedder):
    """Ingest and query threads embed at once with different input sizes: no call sees another's batch."""
    emb = TorchEmbedder(EmbedderSettings().resolve_model(), EmbedderSettings(backend="torch", batch_size=4), "cpu")
    frames = real_frames()
    jobs = [frames[:5], frames[5:], [frames[6]] * 3, frames[::2]]
    alone = [emb.embed(j) for j in jobs]
    assert_concurrent_calls_agree(emb.embed, jobs, alone, repeats=3, atol=1e-5)


def test_auto_takes_torch_only_on_cuda():
    settings = EmbedderSettings()
    spec = settings.resolve_model()
    backend, why = select_backend(settings, spec)
    cuda_ok, _ = torch_cuda_available(settings.gpu_id)
    if tensorrt_available(spec)[0]:
        assert backend == "tensorrt"
    elif cuda_ok:
        assert backend == "torch"
    else:
        # on the CPU ONNX Runtime is the faster of the two: auto keeps it, and says why not torch
        assert backend == "onnx" and "torch" in why
        assert isinstance(load_embedder(settings), OnnxEmbedder)
    if torch_ok:
        assert select_backend(EmbedderSettings(backend="torch"), spec)[0] == "torch"
    else:
        with pytest.raises(TorchUnavailable):
            load_embedder(EmbedderSettings(backend="torch"))


@pytest.mark.gpu
def test_torch_on_cuda_matches_onnx_runtime_within_fp16(onnx_embedder):
    ok, why = torch_cuda_available()
    if not ok:
        pytest.skip(why)
    import torch

    emb = load_embedder(EmbedderSettings(backend="torch"))
    assert isinstance(emb, TorchEmbedder) and emb.cuda_device == 0
    frames = real_frames()
    ref = onnx_embedder.embed(frames)
    # fp16 autocast and torch's antialiased resize (on the GPU) instead of PIL's
    assert cosines(emb.embed(frames), ref).min() >= 0.999  # numpy frames
    on_gpu = [torch.from_numpy(f).cuda() for f in frames]  # what NVDEC hands over
    np.testing.assert_allclose(emb.embed(on_gpu), emb.embed(frames), atol=1e-3)
