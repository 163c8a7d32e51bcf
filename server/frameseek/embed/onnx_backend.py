"""ONNX Runtime embedder (CPU by default; CUDA execution provider when onnxruntime-gpu has one)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from .preprocess import preprocess, same_size_runs, to_tensor
from .spec import ModelSpec

log = logging.getLogger(__name__)

_ORT_TYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(float16)": "float16"}


def l2_normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32, copy=False)


class OnnxEmbedder:
    """Batched embeddings with ONNX Runtime. Thread-safe (`InferenceSession.run` is)."""

    backend = "onnxruntime"
    cuda_device = None  # takes host arrays only (frames decoded on the GPU are copied back first)

    def __init__(
        self,
        spec: ModelSpec,
        batch_size: int = 16,
        threads: int = 0,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        self.spec = spec
        self.batch_size = batch_size
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # No busy-waiting in the thread pool: the decoder shares these cores, and spinning
        # workers would steal its time while they wait for the next batch.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(spec.path), sess_options=opts, providers=list(providers))
        except Exception as exc:
            raise ValueError(f"cannot load ONNX model {spec.path}: {exc}") from exc
        inputs = self.session.get_inputs()
        if spec.input_name is None and len(inputs) != 1:
            raise ValueError(f"{spec.path}: {len(inputs)} inputs; set ModelSpec.input_name")
        inp = next((i for i in inputs if i.name == (spec.input_name or inputs[0].name)), None)
        if inp is None:
            raise ValueError(f"{spec.path}: no input named {spec.input_name!r}")
        self.input_name = inp.name
        want = _ORT_TYPES.get(inp.type)
        if want != spec.preprocess.dtype:
            raise ValueError(f"{spec.path}: input {inp.name} is {inp.type}, the spec feeds {spec.preprocess.dtype}")
        outputs = self.session.get_outputs()
        out = next((o for o in outputs if o.name == (spec.output_name or outputs[0].name)), None)
        if out is None:
            raise ValueError(f"{spec.path}: no output named {spec.output_name!r}")
        self.output_name = out.name
        dim = out.shape[-1] if isinstance(out.shape[-1], int) else spec.dim
        if dim is None:
            dim = int(self._run([np.zeros((spec.preprocess.size,) * 2 + (3,), np.uint8)]).shape[1])
        self.dim = int(dim)
        self.name = spec.name
        self.providers = self.session.get_providers()
        # How long a pipeline should hold a batch open for more frames. On the CPU execution
        # provider the cost per frame is flat in the batch size (measured 11.5-12.8 ms of CPU per
        # frame for sscd_distilled at batch 1..32), so waiting would only idle the model while
        # frames are ready; accelerators do want full batches.
        self.batch_wait_s = 0.0 if self.providers == ["CPUExecutionProvider"] else 0.05

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The model-input (height, width) for a frame of this size: the pipeline hands it to the
        decoder as a size hint, so frames can arrive already downscaled."""
        return self.spec.preprocess.output_hw(height, width)

    # The pipeline calls preprocess() and embed_preprocessed() on different threads so that
    # resizing overlaps inference; embed() does both.
    @property
    def scalable_input(self) -> bool:
        """`preprocess(..., scale=s)` with s < 1 works (a dynamic-shape input)."""
        return self.spec.preprocess.scalable

    def preprocess(self, frames: Sequence[np.ndarray], flip: bool = False, scale: float = 1.0) -> list[np.ndarray]:
        return preprocess(frames, self.spec.preprocess, scale, flip)

    def embed_preprocessed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self._run(images)

    def embed(self, frames: Sequence[np.ndarray], flip: bool = False) -> np.ndarray:
        """RGB uint8 HxWx3 frames -> float32[n, dim], L2-normalised (flip: of the mirrored frames)."""
        return self.embed_preprocessed(self.preprocess(frames, flip))

    def _run(self, images: Sequence[np.ndarray]) -> np.ndarray:
        parts = []
        for a, b in same_size_runs(images, self.batch_size):
            x = to_tensor(images[a:b], self.spec.preprocess)
            y = self.session.run([self.output_name], {self.input_name: x})[0]
            parts.append(np.asarray(y, np.float32).reshape(b - a, -1))
        out = np.concatenate(parts)
        return l2_normalize(out) if self.spec.l2_normalize else out
