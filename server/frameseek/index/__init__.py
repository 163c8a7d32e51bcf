"""Vector indexes: the typed Python face of frameseek._native.

`FlatIndex` (exact) and `Filter` are the native classes themselves (zero-copy numpy in and out);
the helpers in `frameseek.index.arrays` turn friendlier inputs (lists, float64, strided views)
into exactly what the native code accepts, so the conversions are explicit at the call site.
"""
from frameseek._native import NO_ID, Filter, FlatIndex, simd_level

from .arrays import as_ids, as_query_matrix, as_vectors, normalise, valid_mask
from .hnsw import HnswIndex

__all__ = [
    "NO_ID",
    "Filter",
    "FlatIndex",
    "HnswIndex",
    "as_ids",
    "as_query_matrix",
    "as_vectors",
    "normalise",
    "simd_level",
    "valid_mask",
]
