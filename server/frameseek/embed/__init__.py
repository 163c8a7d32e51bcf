"""Image embedders behind one interface: ONNX Runtime on the CPU (default), TensorRT or torch on
NVIDIA GPUs, all running the same ONNX file.

`load_embedder()` picks the backend: with backend="auto" TensorRT when it can run the model here,
else torch when it has a CUDA device, else ONNX Runtime, logging why. Any ONNX image encoder plugs
in through a `ModelSpec`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .onnx_backend import OnnxEmbedder, l2_normalize
from .spec import EmbedderSettings, ModelSpec, PreprocessSpec, builtin_models
from .tensorrt_backend import (
    BACKGROUND_BUILDS,
    InputProfile,
    TensorRTEmbedder,
    TensorRTUnavailable,
    build_engine_in_background,
    engine_cache_key,
    engine_file_for,
    engine_path,
    tensorrt_available,
)
from .torch_backend import TorchEmbedder, TorchUnavailable, torch_cuda_available, torch_importable

log = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    """RGB uint8 HxWx3 frames -> float32[n, dim], L2-normalised.

    Optionally, `cuda_device` is the CUDA device whose tensors `embed`/`preprocess` take as they
    are (frames NVDEC decoded there); absent or None: the embedder takes host arrays only (not part
    of the runtime check either).

    `preprocess` + `embed_preprocessed` split the work so a pipeline can resize on one thread while
    the model runs on another; `embed` does both. Optionally, `input_size(height, width) -> (h, w)`
    gives the model-input size for a frame of that size; the pipeline passes it to the decoder as a
    size hint so frames can be converted and downscaled in one pass (not part of the runtime check:
    embedders without it still work, at full-size decoding cost).
    """

    name: str
    dim: int
    backend: str

    def embed(self, frames: Sequence[Any], flip: bool = False) -> np.ndarray: ...

    def preprocess(self, frames: Sequence[Any], flip: bool = False) -> list[Any]: ...

    def embed_preprocessed(self, images: Sequence[Any]) -> np.ndarray: ...


def select_backend(settings: EmbedderSettings, spec: ModelSpec) -> tuple[str, str]:
    """('tensorrt' | 'torch' | 'onnx', reason). An explicit backend that cannot run raises
    (TensorRTUnavailable / TorchUnavailable); 'auto' takes torch only on CUDA (on the CPU ONNX
    Runtime is the faster of the two)."""
    if settings.backend == "onnx":
        return "onnx", "ONNX Runtime requested"
    if settings.backend == "torch":
        ok, why = torch_importable()
        if not ok:
            raise TorchUnavailable(why)
        return "torch", why
    ok, why = tensorrt_available(spec, settings.gpu_id)
    if ok:
        return "tensorrt", why
    if settings.backend == "tensorrt":
        raise TensorRTUnavailable(why)
    ok, torch_why = torch_cuda_available(settings.gpu_id)
    if ok:
        return "torch", f"{torch_why} (TensorRT: {why})"
    return "onnx", f"TensorRT: {why}; torch: {torch_why}"


def load_embedder(settings: EmbedderSettings | None = None) -> Embedder:
    """Build the configured embedder (default: sscd_distilled; on ONNX Runtime when no GPU)."""
    settings = settings or EmbedderSettings()
    spec = settings.resolve_model()
    backend, why = select_backend(settings, spec)
    if backend == "tensorrt" and settings.backend == "auto":
        # No cached engine: building one takes minutes, which a server start should not wait
        # for. Build it in the background for the next start, embed with the next backend now.
        try:
            target = engine_file_for(spec, settings)
            cached = target.exists()
        except Exception as exc:
            log.warning("TensorRT engine cache unusable (%s)", exc)
            target, cached = None, True  # let the load below fail (and fall back) with its reason
        if not cached and target is not None:
            build_engine_in_background(spec, settings, target)
            ok, torch_why = torch_cuda_available(settings.gpu_id)
            backend = "torch" if ok else "onnx"
            why = f"the TensorRT engine is being built in the background ({target}); {torch_why}"
            log.warning("embedding on %s until the next start: %s", backend, why)
    if backend == "tensorrt":
        try:
            return TensorRTEmbedder(spec, settings)
        except Exception as exc:
            if settings.backend == "tensorrt":
                raise
            log.warning("TensorRT embedder failed (%s); trying the next backend", exc)
            ok, torch_why = torch_cuda_available(settings.gpu_id)
            backend = "torch" if ok else "onnx"
    if backend == "torch":
        try:
            emb = TorchEmbedder(spec, settings)
            log.info("embedding on torch (%s): %s", emb.device, why)
            return emb
        except Exception as exc:
            if settings.backend == "torch":
                raise
            log.warning("torch embedder failed (%s); falling back to ONNX Runtime on the CPU", exc)
    elif settings.backend == "auto":
        log.info("embedding on ONNX Runtime (CPU): %s", why)
    return OnnxEmbedder(spec, batch_size=settings.batch_size, threads=settings.threads)


__all__ = [
    "BACKGROUND_BUILDS",
    "Embedder",
    "EmbedderSettings",
    "InputProfile",
    "ModelSpec",
    "OnnxEmbedder",
    "PreprocessSpec",
    "TensorRTEmbedder",
    "TensorRTUnavailable",
    "TorchEmbedder",
    "TorchUnavailable",
    "builtin_models",
    "engine_cache_key",
    "engine_file_for",
    "engine_path",
    "l2_normalize",
    "load_embedder",
    "select_backend",
    "tensorrt_available",
    "torch_cuda_available",
    "torch_importable",
]
