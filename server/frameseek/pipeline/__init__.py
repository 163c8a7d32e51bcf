"""Media -> named vector sets: decode, sample, filter, and embed each kept frame once per view.

- `views`: what a view is (`View`, a declared transform of a sampled frame) and which views each
  caller asks for (`query_views`, `image_query_views`, `index_views`, from the `views` settings).
- `frames`: `embed_media`, the decode -> sample -> embed pipeline that produces the vector sets.

A modality (`frameseek.modality`) builds on these: the frame modality is "every sampled frame,
under these views"; later modalities extract other things (face boxes, audio windows).
"""

from .frames import (
    INDEX_COARSE_SCALE,
    QUERY_COARSE_SCALE,
    QUERY_FPS,
    REFERENCE_FPS,
    EmbeddedMedia,
    ProgressCallback,
    SamplingSettings,
    embed_media,
)
from .views import (
    COARSE,
    COARSE_MIRROR,
    DEBLOCK,
    FULL,
    FULL_VIEW,
    MIRROR,
    View,
    frame_views,
    gaussian_blur,
    image_query_views,
    index_views,
    query_views,
    region_views,
)

__all__ = [
    "EmbeddedMedia",
    "SamplingSettings",
    "embed_media",
    "ProgressCallback",
    "REFERENCE_FPS",
    "QUERY_FPS",
    "QUERY_COARSE_SCALE",
    "INDEX_COARSE_SCALE",
    "View",
    "FULL",
    "MIRROR",
    "COARSE",
    "COARSE_MIRROR",
    "DEBLOCK",
    "FULL_VIEW",
    "frame_views",
    "query_views",
    "image_query_views",
    "index_views",
    "region_views",
    "gaussian_blur",
]
