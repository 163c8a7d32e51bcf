"""Rates for the stats page that GetStats does not carry, read from this process's Prometheus
metrics (frameseek.metrics, the same figures /metrics exports): searches per second since the
previous look, and the mean ingest speed (media seconds per wall-clock second)."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY

SEARCH_METHODS = {"SearchByImage", "SearchByVideo", "SearchByVector"}


def _searches_answered() -> float:
    """Search RPCs answered so far: by the Python service and by the native front end's fast path."""
    total = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == "frameseek_requests_total" and sample.labels.get("method") in SEARCH_METHODS:
                total += sample.value
            elif sample.name == "frameseek_front_end_calls_total" and sample.labels.get("path") == "native":
                total += sample.value
    return total


class ServerRates:
    def __init__(self) -> None:
        self._last = (time.monotonic(), _searches_answered())

    def sample(self) -> dict:
        now, n = time.monotonic(), _searches_answered()
        (t0, n0), self._last = self._last, (now, n)
        count = REGISTRY.get_sample_value("frameseek_ingest_realtime_factor_count") or 0.0
        total = REGISTRY.get_sample_value("frameseek_ingest_realtime_factor_sum") or 0.0
        return {
            "searches_total": n,
            "search_qps": (n - n0) / (now - t0) if now > t0 else 0.0,
            "qps_window_seconds": now - t0,
            "ingests_measured": count,
            "ingest_realtime_mean": total / count if count else 0.0,
        }
