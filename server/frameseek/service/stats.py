"""GetStats: counts per collection and for the server."""

from __future__ import annotations

import time

from .. import __version__, _native
from .audio import Soundtracks
from .core import Core
from .ingest import Ingest
from .recall import RecallMonitor

#: GetStats lists at most this many collections
MAX_COLLECTIONS = 1000


async def stats(core: Core, ingest: Ingest, soundtracks: Soundtracks, recall: RecallMonitor) -> dict:
    core.check_ready()
    storage = core.storage

    def collect():
        colls = []
        for rec in storage.list_collections("", MAX_COLLECTIONS):
            n, s, d = storage.collection_counts(rec.id)
            colls.append(
                {
                    "collection": rec.name,
                    "video_count": n,
                    "sample_count": s,
                    "total_duration_seconds": d,
                    "index_vectors": storage.vectors_of(rec.id),
                    "unlinked_vectors": storage.unlinked_vectors(rec.id),
                    **recall.stats(rec.id),
                }
            )
        return colls, storage.storage_bytes()

    colls, nbytes = await core.io(collect)
    return {
        "version": __version__,
        "uptime_seconds": time.time() - core.started_at,
        "collections": colls,
        "video_count": sum(c["video_count"] for c in colls),
        "sample_count": sum(c["sample_count"] for c in colls),
        "storage_bytes": nbytes,
        "active_ingests": ingest.pending,
        "copy_threshold": core.settings.matching.copy_threshold,
        "simd_level": _native.simd_level(),
        "recovery_problems": storage.recovery_problems(),
        "audio_threshold": core.settings.audio.threshold,
        "audio_fingerprints": soundtracks.fingerprint_count(),
    }
