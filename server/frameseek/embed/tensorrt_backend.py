"""TensorRT embedder (GPU), written against the TensorRT 10/11 Python API.

* The engine is built from the same ONNX file as the CPU path on first use and cached on disk. The
  cache key covers everything that makes a serialized engine invalid: the ONNX file's hash, the
  TensorRT version, the GPU's compute capability and the input profile. A cached engine that fails
  to deserialise (driver update, truncated write) is rebuilt.
* One dynamic-shape optimisation profile: batch 1..max_batch, height/width from the preprocessing's
  short side up to its long-side cap.
* Inference: named tensors (`set_input_shape` / `set_tensor_address`) and `execute_async_v3` on a
  CUDA stream, with device buffers held by torch. An execution context holds the input shape and
  tensor addresses between those calls, so each calling thread (ingest workers, query handlers)
  gets its own context and stream: one shared pair would let concurrent calls mix batches. Frames
  decoded by NVDEC (CUDA tensors) are resized and converted on the GPU (gpu_preprocess.py): no
  host round trip.
* No precision builder flags: TensorRT 11 removed the FP16 flag (strongly typed networks), so the
  precision is the ONNX file's (sscd_distilled: fp16 weights, fp32 maths).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from .spec import MIN_INPUT_SCALE, EmbedderSettings, ModelSpec

log = logging.getLogger(__name__)


class TensorRTUnavailable(RuntimeError):
    """TensorRT cannot run here (reason in the message)."""


class InputProfile(BaseModel):
    """The optimisation profile of the engine's image input, NHWC or NCHW as the spec says."""

    model_config = ConfigDict(frozen=True)

    min_shape: tuple[int, int, int, int]
    opt_shape: tuple[int, int, int, int]
    max_shape: tuple[int, int, int, int]

    @classmethod
    def for_spec(cls, spec: ModelSpec, max_batch: int) -> InputProfile:
        p = spec.preprocess
        if p.resize == "fixed":
            assert p.fixed_hw is not None
            lo = hi = p.fixed_hw
            opt = p.fixed_hw
        else:
            lo = (math.ceil(p.size * MIN_INPUT_SCALE),) * 2  # coarse query views (output_hw scale)
            hi = (p.max_long_side, p.max_long_side)
            opt = (p.size, min(p.max_long_side, round(p.size * 16 / 9)))  # 16:9 video

        def shape(b: int, hw: tuple[int, int]) -> tuple[int, int, int, int]:
            return (b, hw[0], hw[1], 3) if p.layout == "NHWC" else (b, 3, hw[0], hw[1])

        return cls(
            min_shape=shape(1, lo),
            opt_shape=shape(max(1, min(max_batch, 16)), opt),
            max_shape=shape(max_batch, hi),
        )


def file_sha256(path: str | os.PathLike) -> str:
    st = os.stat(path)
    return _file_sha256_cached(os.fspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _file_sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def engine_cache_key(
    onnx_sha256: str, trt_version: str, compute_capability: tuple[int, int], profile: InputProfile
) -> str:
    """A stable hex key for one serialized engine; any input change gives a different key."""
    payload = json.dumps(
        {
            "onnx": onnx_sha256,
            "trt": trt_version,
            "sm": list(compute_capability),
            "profile": profile.model_dump(mode="json"),
            "format": 1,  # bump when the way engines are built changes
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def engine_path(cache_dir: Path, model_name: str, key: str) -> Path:
    return Path(cache_dir) / f"{model_name}-{key[:24]}.engine"


def cuda_compute_capability(gpu_id: int = 0) -> tuple[int, int]:
    """(major, minor) of a CUDA device through the driver API (no torch needed)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise TensorRTUnavailable("no NVIDIA driver (libcuda.so.1 cannot be loaded)") from exc
    if lib.cuInit(0) != 0:
        raise TensorRTUnavailable("cuInit failed")
    dev = ctypes.c_int()
    if lib.cuDeviceGet(ctypes.byref(dev), gpu_id) != 0:
        raise TensorRTUnavailable(f"no CUDA device {gpu_id}")
    major, minor = ctypes.c_int(), ctypes.c_int()
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
    lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)
    lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)
    return major.value, minor.value


def tensorrt_available(spec: ModelSpec | None = None, gpu_id: int = 0) -> tuple[bool, str]:
    """Whether the TensorRT backend can run `spec` here, and why (not)."""
    if spec is not None and not spec.tensorrt_compatible:
        return False, f"model {spec.name} is not TensorRT-compatible (CPU only)"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "TensorRT is not installed"
    except Exception as exc:
        return False, f"TensorRT failed to import: {exc}"
    try:
        import torch
    except ImportError:
        return False, "torch (device buffers, GPU preprocessing) is not installed"
    if not torch.cuda.is_available() or torch.cuda.device_count() <= gpu_id:
        return False, f"no CUDA device {gpu_id} visible to torch"
    return True, f"TensorRT {tensorrt.__version__} on {torch.cuda.get_device_name(gpu_id)}"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def engine_file_for(spec: ModelSpec, settings: EmbedderSettings) -> Path:
    """Where the engine for `spec` on this GPU and TensorRT version is cached (it may not exist)."""
    import tensorrt as trt

    profile = InputProfile.for_spec(spec, settings.trt_max_batch)
    cc = cuda_compute_capability(settings.gpu_id)
    key = engine_cache_key(file_sha256(spec.path), trt.__version__, cc, profile)
    return engine_path(settings.engine_cache_dir, spec.name, key)


def build_engine(spec: ModelSpec, settings: EmbedderSettings, target: Path) -> bytes:
    """A serialized engine for `spec` (minutes: TensorRT times its kernels on this GPU)."""
    import tensorrt as trt

    log.info("building TensorRT engine for %s (cached at %s)", spec.path, target)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10+
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(spec.path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTUnavailable(f"TensorRT cannot parse {spec.path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.trt_workspace_mb << 20)
    inp = spec.input_name or network.get_input(0).name
    shapes = InputProfile.for_spec(spec, settings.trt_max_batch)
    profile = builder.create_optimization_profile()
    profile.set_shape(inp, shapes.min_shape, shapes.opt_shape, shapes.max_shape)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTUnavailable(f"TensorRT failed to build an engine for {spec.path}")
    return bytes(serialized)


#: engine file -> the thread building it (`build_engine_in_background`)
BACKGROUND_BUILDS: dict[Path, threading.Thread] = {}
_builds_lock = threading.Lock()


def build_engine_in_background(spec: ModelSpec, settings: EmbedderSettings, target: Path) -> threading.Thread:
    """Build and cache the engine on a daemon thread (once per file): `backend = auto` does not hold
    up a server start for minutes; the next start loads the cached engine."""

    def run() -> None:
        try:
            _atomic_write(target, build_engine(spec, settings, target))
            log.info("TensorRT engine cached at %s: used from the next start", target)
        except Exception as exc:
            log.warning("background TensorRT engine build for %s failed: %s", spec.name, exc)

    with _builds_lock:
        th = BACKGROUND_BUILDS.get(target)
        if th is None:
            th = threading.Thread(target=run, name="frameseek-trt-build", daemon=True)
            BACKGROUND_BUILDS[target] = th
            th.start()
    return th


class TensorRTEmbedder:
    """Batched embeddings on a TensorRT engine; accepts numpy frames and CUDA tensors alike."""

    backend = "tensorrt"

    def __init__(self, spec: ModelSpec, settings: EmbedderSettings) -> None:
        ok, why = tensorrt_available(spec, settings.gpu_id)
        if not ok:
            raise TensorRTUnavailable(why)
        import tensorrt as trt
        import torch

        self.spec, self.settings = spec, settings
        self.name = spec.name
        self.device = torch.device("cuda", settings.gpu_id)
        self.batch_size = min(settings.batch_size, settings.trt_max_batch)
        self.profile = InputProfile.for_spec(spec, settings.trt_max_batch)
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.engine_file = engine_file_for(spec, settings)
        self.engine = self._load_or_build()
        self.cuda_device = settings.gpu_id
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.input_name = spec.input_name or ins[0]
        self.output_name = spec.output_name or outs[0]
        self.dim = int(self.engine.get_tensor_shape(self.output_name)[-1])
        # Buffers follow the engine's I/O types (precision comes from the ONNX file).
        torch_types = {trt.float32: torch.float32, trt.float16: torch.float16, trt.uint8: torch.uint8}
        in_type = torch_types.get(self.engine.get_tensor_dtype(self.input_name))
        want = {"uint8": torch.uint8, "float32": torch.float32, "float16": torch.float16}[spec.preprocess.dtype]
        if in_type != want:
            raise TensorRTUnavailable(
                f"engine input {self.input_name} is {self.engine.get_tensor_dtype(self.input_name)}, "
                f"the preprocessing spec feeds {spec.preprocess.dtype}"
            )
        self.out_dtype = torch_types.get(self.engine.get_tensor_dtype(self.output_name), torch.float32)
        self._per_thread = threading.local()
        self.execution()  # the first context now: a failure to create one fails the load, not a call

    def execution(self):
        """(execution context, CUDA stream) of the calling thread, made on its first call."""
        import torch

        mine = self._per_thread
        if not hasattr(mine, "context"):
            context = self.engine.create_execution_context()
            if context is None:
                raise RuntimeError("TensorRT could not create an execution context (device memory?)")
            mine.context, mine.stream = context, torch.cuda.Stream(device=self.device)
        return mine.context, mine.stream

    # -- engine ----------------------------------------------------------------------------
    def _load_or_build(self):
        trt = self._trt
        runtime = trt.Runtime(self._logger)
        if self.engine_file.exists():
            engine = runtime.deserialize_cuda_engine(self.engine_file.read_bytes())
            if engine is not None:
                log.info("TensorRT engine loaded from %s", self.engine_file)
                return engine
            log.warning("cached TensorRT engine %s does not deserialise; rebuilding", self.engine_file)
        data = build_engine(self.spec, self.settings, self.engine_file)
        try:
            _atomic_write(self.engine_file, data)
        except OSError as exc:  # a read-only or full cache: the engine still serves this process
            log.warning("TensorRT engine not cached at %s (%s); it is rebuilt on the next start", self.engine_file, exc)
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise TensorRTUnavailable("a freshly built TensorRT engine failed to deserialise")
        return engine

    # -- inference -------------------------------------------------------------------------
    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The engine-input (height, width) for a frame of this size (the decoder's size hint:
        CPU-decoded frames then upload already downscaled)."""
        return self.spec.preprocess.output_hw(height, width)

    @property
    def scalable_input(self) -> bool:
        """`preprocess(..., scale=s)` with s >= MIN_INPUT_SCALE fits the engine's profile."""
        return self.spec.preprocess.scalable

    def preprocess(self, frames: Sequence[Any], flip: bool = False, scale: float = 1.0) -> list[Any]:
        from .gpu_preprocess import preprocess_gpu

        return preprocess_gpu(frames, self.spec.preprocess, self.device, flip=flip, scale=scale)

    def embed_preprocessed(self, images: Sequence[Any]) -> np.ndarray:
        import torch

        from .gpu_preprocess import stack_gpu
        from .preprocess import same_size_runs

        if not images:
            return np.zeros((0, self.dim), np.float32)
        parts = []
        context, stream = self.execution()
        # Preprocessing ran on the decode thread's (default) stream: order after it.
        stream.wait_stream(torch.cuda.default_stream(self.device))
        with torch.cuda.stream(stream):
            for a, b in same_size_runs(images, self.batch_size):
                x = stack_gpu(images[a:b], self.spec.preprocess)
                out = torch.empty((b - a, self.dim), dtype=self.out_dtype, device=self.device)
                if not context.set_input_shape(self.input_name, tuple(x.shape)):
                    raise ValueError(
                        f"input shape {tuple(x.shape)} is outside the engine's profile "
                        f"{self.profile.min_shape}..{self.profile.max_shape}"
                    )
                context.set_tensor_address(self.input_name, x.data_ptr())
                context.set_tensor_address(self.output_name, out.data_ptr())
                if not context.execute_async_v3(stream.cuda_stream):
                    raise RuntimeError("TensorRT execute_async_v3 failed")
                parts.append(out)
            y = torch.cat(parts).float()
            if self.spec.l2_normalize:
                y = torch.nn.functional.normalize(y, dim=1)
            host = y.cpu()  # synchronises the stream
        return host.numpy().astype(np.float32, copy=False)

    def embed(self, frames: Sequence[Any], flip: bool = False) -> np.ndarray:
        return self.embed_preprocessed(self.preprocess(frames, flip))
