"""GPU preprocessing with torch: frames stay on the device from NVDEC to TensorRT.

Resize is antialiased bilinear (`interpolate(..., antialias=True)`, the same triangle filter PIL
uses on the CPU path), then rounding back to uint8 so the engine sees what the CPU path feeds ONNX
Runtime; layout / dtype / normalisation follow the `PreprocessSpec`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .spec import PreprocessSpec


def preprocess_gpu(
    frames: Sequence[Any], spec: PreprocessSpec, device, flip: bool = False, scale: float = 1.0
) -> list[Any]:
    """HxWx3 uint8 frames (numpy or CUDA tensors) -> resized HxWx3 uint8 CUDA tensors
    (`spec.output_hw(h, w, scale)`)."""
    import torch
    import torch.nn.functional as F

    out = []
    for f in frames:
        t = f if isinstance(f, torch.Tensor) else torch.from_numpy(f)
        t = t.to(device, non_blocking=True)
        h, w = int(t.shape[0]), int(t.shape[1])
        oh, ow = spec.output_hw(h, w, scale)
        if (oh, ow) != (h, w):
            x = t.permute(2, 0, 1).unsqueeze(0).float()
            x = F.interpolate(x, size=(oh, ow), mode="bilinear", antialias=True, align_corners=False)
            t = x.round_().clamp_(0, 255).to(torch.uint8).squeeze(0).permute(1, 2, 0)
        if flip:
            t = t.flip(1)
        out.append(t.contiguous())
    return out


def stack_gpu(images: Sequence[Any], spec: PreprocessSpec):
    """Stack same-size resized uint8 image tensors into the model's input tensor (contiguous, on
    the images' device)."""
    import torch

    return batch_to_input(torch.stack(list(images)), spec)


def batch_to_input(x, spec: PreprocessSpec):
    """A uint8 NHWC batch tensor -> the model's input tensor (dtype, normalisation, layout), on
    its device (the torch backend passes host batches too)."""
    import torch

    if spec.dtype != "uint8":
        x = x.float()
        if spec.scale != 1.0:
            x = x * spec.scale
        if spec.mean is not None:
            x = x - torch.tensor(spec.mean, device=x.device)
        if spec.std is not None:
            x = x / torch.tensor(spec.std, device=x.device)
        if spec.dtype == "float16":
            x = x.half()
    if spec.layout == "NCHW":
        x = x.permute(0, 3, 1, 2)
    return x.contiguous()
