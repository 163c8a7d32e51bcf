"""Approximate search: `HnswIndex` (hnswlib 0.8 graph on frameseek's SIMD kernels).

The class is the native one itself (zero-copy numpy in and out, GIL released); see its docstring
for the defaults chosen for video data and the thread-safety rules. `DEFAULT_M`,
`DEFAULT_EF_CONSTRUCTION`, `DEFAULT_EF` and `DEFAULT_GROUP_EF` mirror the C++ defaults so callers
(settings, CLI) can show them without building an index.
"""
from frameseek._native import HnswIndex

DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 300
DEFAULT_EF = 64
DEFAULT_GROUP_EF = 16  # distinct groups kept by HnswIndex.search_groups when ef is None

__all__ = ["DEFAULT_EF", "DEFAULT_EF_CONSTRUCTION", "DEFAULT_GROUP_EF", "DEFAULT_M", "HnswIndex"]
