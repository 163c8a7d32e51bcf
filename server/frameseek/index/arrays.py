"""Explicit conversions into the arrays the native indexes accept.

The native module refuses float64, strided views and NaN instead of converting silently (a hidden
copy of a large matrix, or a NaN that poisons a ranking, is worse than an error). These helpers are
the one place a caller opts into a conversion.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

from frameseek._native import NO_ID

__all__ = ["as_ids", "as_query_matrix", "as_vectors", "normalise", "valid_mask"]


def as_vectors(x: npt.ArrayLike, dim: int | None = None) -> np.ndarray:
    """Any real array-like -> C-contiguous float32 [n, dim] (copies only when needed).

    Raises ValueError for the wrong number of dimensions, a dimension other than ``dim``, or
    NaN/inf (checked here so the message names the caller's array, not the index).
    """
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"vectors must be real numbers, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"vectors must be 2-D [n, dim], got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"vectors have dimension {a.shape[1]}, expected {dim}")
    if not np.isfinite(a).all():
        raise ValueError("vectors contain NaN or infinity")
    return a


def as_query_matrix(q: npt.ArrayLike, dim: int | None = None) -> np.ndarray:
    """One query [dim] or many [n, dim] -> C-contiguous float32 [n, dim]."""
    a = np.asarray(q)
    if a.ndim == 1:
        a = a[None, :]
    return as_vectors(a, dim)


def as_ids(ids: npt.ArrayLike) -> np.ndarray:
    """Integer array-like -> 1-D uint64, refusing negatives, floats and NO_ID."""
    a = np.asarray(ids)
    if a.ndim == 0:
        a = a[None]
    if a.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {a.shape}")
    if a.size == 0:
        return np.empty(0, dtype=np.uint64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "i" and (a < 0).any():
        raise ValueError("ids must be non-negative")
    out = a.astype(np.uint64, copy=False)
    if (out == np.uint64(NO_ID)).any():
        raise ValueError("id 2**64-1 is reserved (NO_ID)")
    return out


def normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32 copy), so metric 'ip' ranks by cosine."""
    a = as_vectors(x)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), np.float32(eps))


def valid_mask(ids: np.ndarray) -> np.ndarray:
    """True where a search result slot holds a vector (not NO_ID padding)."""
    return np.asarray(ids) != np.uint64(NO_ID)
