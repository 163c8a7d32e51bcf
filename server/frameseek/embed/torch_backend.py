"""Torch embedder: the same ONNX file as the other backends, converted to a torch module.

Why: TensorRT is often not installable (its PyPI wheels download from NVIDIA at install time) and
ONNX Runtime's CUDA build is a separate 256 MB wheel, while torch with CUDA is on most GPU
machines. `onnx2torch` turns the ONNX graph into a `torch.fx` module; on CUDA it runs under fp16
autocast (`torch_fp16`), and optionally compiled (`torch_compile`; off by default: compiling
takes a minute per new input shape, and only a measurement says whether it pays, see
benchmarks/gpu). On the CPU it runs in float32 and gives ONNX Runtime's embeddings (tested); it
is chosen there only when asked for (`backend="torch"`): ONNX Runtime is faster on the CPU.

Preprocessing is the other backends': on CUDA `gpu_preprocess` (shared with TensorRT: frames
decoded by NVDEC never leave the device), on the CPU `preprocess` (shared with ONNX Runtime).
Thread safety: an eager module's forward holds no state between calls, so ingest and query
threads call it at once (each on its thread's current CUDA stream); a compiled one is serialised.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .spec import EmbedderSettings, ModelSpec

log = logging.getLogger(__name__)

#: ONNX TensorProto element types of the input dtypes a `PreprocessSpec` can feed.
_ONNX_INPUT_TYPES = {2: "uint8", 1: "float32", 10: "float16"}


class TorchUnavailable(RuntimeError):
    """The torch backend cannot run here (reason in the message)."""


def torch_importable() -> tuple[bool, str]:
    """Whether torch and onnx2torch import here, and why (not)."""
    try:
        import onnx2torch  # noqa: F401
        import torch
    except ImportError as exc:
        return False, f"torch / onnx2torch are not installed ({exc.name}; pip install 'frameseek[gpu]')"
    except Exception as exc:  # a broken CUDA install raises at import
        return False, f"torch failed to import: {exc}"
    return True, f"torch {torch.__version__}"


def torch_cuda_available(gpu_id: int = 0) -> tuple[bool, str]:
    """Whether the torch backend can run on CUDA device `gpu_id` (what backend='auto' needs)."""
    ok, why = torch_importable()
    if not ok:
        return False, why
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() <= gpu_id:
        return False, f"no CUDA device {gpu_id} visible to torch ({why})"
    return True, f"{why} on {torch.cuda.get_device_name(gpu_id)}"


def torch_ready_graph(path) -> Any:
    """The ONNX model as onnx2torch can convert it. Two rewrites that keep its maths:
    * constant folding by ONNX Runtime's basic graph optimisations (standard ONNX ops only): the
      sscd_distilled file stores fp16 weights behind Cast nodes, and onnx2torch's Conv wants its
      weights as initializers;
    * trailing empty optional inputs dropped (a Clip without max is written `Clip(x, min, "")`,
      which onnx2torch reads as a dynamic bound)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="frameseek-onnx-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = os.path.join(tmp, "folded.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        model = onnx.load(opts.optimized_model_filepath)
    for node in model.graph.node:
        while node.input and node.input[-1] == "":
            node.input.pop()
    return model


class TorchEmbedder:
    """Batched embeddings with the ONNX model converted to torch; numpy frames and CUDA tensors."""

    backend = "torch"

    def __init__(self, spec: ModelSpec, settings: EmbedderSettings, device: str | None = None) -> None:
        ok, why = torch_importable()
        if not ok:
            raise TorchUnavailable(why)
        import onnx2torch
        import torch

        if device is None:
            cuda_ok, _ = torch_cuda_available(settings.gpu_id)
            device = f"cuda:{settings.gpu_id}" if cuda_ok else "cpu"
        self.device = torch.device(device)
        self.on_cuda = self.device.type == "cuda"
        self.cuda_device = self.device.index if self.on_cuda else None
        self.spec, self.name = spec, spec.name
        self.batch_size = settings.batch_size
        # A GPU wants full batches; on the CPU the cost per frame does not depend on the batch.
        self.batch_wait_s = 0.05 if self.on_cuda else 0.0
        model = torch_ready_graph(spec.path)
        inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        inp = next((i for i in inputs if i.name == (spec.input_name or inputs[0].name)), None)
        if inp is None or (spec.input_name is None and len(inputs) != 1):
            raise ValueError(f"{spec.path}: cannot tell the image input among {[i.name for i in inputs]}")
        feeds = _ONNX_INPUT_TYPES.get(inp.type.tensor_type.elem_type)
        if feeds != spec.preprocess.dtype:
            raise ValueError(f"{spec.path}: input {inp.name} is {feeds}, the spec feeds {spec.preprocess.dtype}")
        outputs = [o.name for o in model.graph.output]
        self._output_index = outputs.index(spec.output_name) if spec.output_name else 0
        try:
            module = onnx2torch.convert(model)
        except Exception as exc:
            raise TorchUnavailable(f"onnx2torch cannot convert {spec.path}: {exc}") from exc
        self.module = module.eval().to(self.device)
        self.fp16 = self.on_cuda and settings.torch_fp16
        self._lock: threading.Lock | None = None
        if self.on_cuda and settings.torch_compile:
            self.module = torch.compile(self.module, dynamic=True)
            self._lock = threading.Lock()  # compiling (and its caches) is not made for concurrent callers
        probe = np.zeros((*spec.preprocess.output_hw(spec.preprocess.size, spec.preprocess.size), 3), np.uint8)
        try:
            self.dim = int(self._run(self.preprocess([probe])).shape[1])
        except Exception as exc:
            if self._lock is None:
                raise
            log.warning("torch.compile failed for %s (%s); running it eagerly", spec.name, exc)
            self.module, self._lock = module.eval().to(self.device), None
            self.dim = int(self._run(self.preprocess([probe])).shape[1])
        if spec.dim is not None and spec.dim != self.dim:
            raise ValueError(f"{spec.path}: output dimension {self.dim}, the spec says {spec.dim}")

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The model-input (height, width) for a frame of this size (the decoder's size hint)."""
        return self.spec.preprocess.output_hw(height, width)

    @property
    def scalable_input(self) -> bool:
        """`preprocess(..., scale=s)` with s < 1 works (a dynamic-shape input)."""
        return self.spec.preprocess.scalable

    def preprocess(self, frames: Sequence[Any], flip: bool = False, scale: float = 1.0) -> list[Any]:
        if self.on_cuda:
            from .gpu_preprocess import preprocess_gpu

            return preprocess_gpu(frames, self.spec.preprocess, self.device, flip=flip, scale=scale)
        from .preprocess import preprocess

        return preprocess(frames, self.spec.preprocess, scale, flip)

    def embed_preprocessed(self, images: Sequence[Any]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, self.dim), np.float32)
        return self._run(images)

    def embed(self, frames: Sequence[Any], flip: bool = False) -> np.ndarray:
        """RGB uint8 HxWx3 frames -> float32[n, dim], L2-normalised (flip: of the mirrored frames)."""
        return self.embed_preprocessed(self.preprocess(frames, flip))

    def _run(self, images: Sequence[Any]) -> np.ndarray:
        import torch

        from .gpu_preprocess import batch_to_input, stack_gpu
        from .preprocess import same_size_runs

        parts = []
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast, self._lock or contextlib.nullcontext():
            for a, b in same_size_runs(images, self.batch_size):
                run = images[a:b]
                if isinstance(run[0], np.ndarray):  # the CPU path's PIL-resized (read-only) arrays
                    x = batch_to_input(torch.from_numpy(np.stack(run)).to(self.device), self.spec.preprocess)
                else:
                    x = stack_gpu([t.to(self.device, non_blocking=True) for t in run], self.spec.preprocess)
                y = self.module(x)
                if isinstance(y, (tuple, list)):
                    y = y[self._output_index]
                parts.append(y.reshape(b - a, -1).float())
            out = torch.cat(parts)
            if self.spec.l2_normalize:
                out = torch.nn.functional.normalize(out, dim=1)
            host = out.cpu()  # synchronises this thread's stream
        return host.numpy().astype(np.float32, copy=False)
