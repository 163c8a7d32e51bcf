"""CPU preprocessing: resize (antialiased bilinear, PIL), layout, dtype, normalisation, batching."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

from .spec import PreprocessSpec


def resize_rgb(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of an HxWx3 uint8 frame to (h, w).

    PIL's BILINEAR widens its triangle filter by the downscale factor (true antialiasing, unlike
    OpenCV's INTER_LINEAR), which is what SSCD was trained with (torchvision Resize, antialias).
    """
    h, w = hw
    if rgb.shape[0] == h and rgb.shape[1] == w:
        return rgb
    img = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR))


def to_tensor(images: Sequence[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """Stack same-size resized HxWx3 uint8 images into the model's input tensor."""
    x = np.stack(images)
    if spec.dtype != "uint8":
        x = x.astype(np.float32)
        if spec.scale != 1.0:
            x *= np.float32(spec.scale)
        if spec.mean is not None:
            x -= np.asarray(spec.mean, np.float32)
        if spec.std is not None:
            x /= np.asarray(spec.std, np.float32)
        if spec.dtype == "float16":
            x = x.astype(np.float16)
    if spec.layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def preprocess(
    frames: Sequence[np.ndarray], spec: PreprocessSpec, scale: float = 1.0, flip: bool = False
) -> list[np.ndarray]:
    """Resize every frame to its input size (`spec.output_hw(h, w, scale)`; frames keep their
    order), mirrored left-right when `flip`."""
    images = [resize_rgb(f, spec.output_hw(f.shape[0], f.shape[1], scale)) for f in frames]
    if flip:
        images = [np.ascontiguousarray(im[:, ::-1]) for im in images]
    return images


def same_size_runs(images: Sequence[np.ndarray], max_batch: int) -> Iterator[tuple[int, int]]:
    """(start, stop) runs of consecutive same-shape images, at most `max_batch` long: frames of one
    video share a size, so this is one batch per `max_batch` frames in practice."""
    start = 0
    n = len(images)
    while start < n:
        stop = start + 1
        shape = images[start].shape
        while stop < n and stop - start < max_batch and images[stop].shape == shape:
            stop += 1
        yield start, stop
        start = stop
