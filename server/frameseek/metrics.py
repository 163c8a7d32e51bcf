"""Prometheus metrics (served on Settings.metrics_address)."""

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("frameseek_requests_total", "RPCs by method and status code", ["method", "code"])
LATENCY = Histogram(
    "frameseek_request_seconds",
    "RPC latency by method",
    ["method"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
INDEX_VECTORS = Gauge("frameseek_index_vectors", "vectors in a collection's index", ["collection"])
UNLINKED_VECTORS = Gauge(
    "frameseek_unlinked_vectors",
    "vectors acknowledged but not yet linked into the HNSW graph (searched exactly meanwhile), per "
    "collection (collection/modality for a modality's index)",
    ["collection"],
)
INGESTED = Counter("frameseek_ingested_total", "items indexed", ["kind"])
INGEST_REALTIME = Histogram(
    "frameseek_ingest_realtime_factor",
    "media seconds indexed per wall-clock second",
    buckets=(0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500),
)
ACTIVE_INGESTS = Gauge("frameseek_active_ingests", "ingests queued or running")
READY = Gauge("frameseek_ready", "1 when the index is loaded and the server serves")
STORAGE_DAMAGE = Counter(
    "frameseek_storage_damage_total",
    "damage found by storage recovery, by kind: log_record "
    "(a damaged vector log record), snapshot (a snapshot that failed its checksum), "
    "foreign_record (a log record that does not match its catalog row), catalog_lost_rows, "
    "catalog_row (a catalog row that fails its checksum), snapshot_vectors (a loaded snapshot's "
    "mapped float32 vectors that fail their checksum, found after the start)",
    ["kind"],
)
# the recall monitor (frameseek.service.recall), per collection
RECALL = Gauge(
    "frameseek_recall",
    "measured recall@k (share of the exact top-k videos returned) of sampled searches at the ef in use",
    ["collection"],
)
RECALL_LOWER = Gauge("frameseek_recall_lower", "lower bound of frameseek_recall's confidence interval", ["collection"])
RECALL_UPPER = Gauge("frameseek_recall_upper", "upper bound of frameseek_recall's confidence interval", ["collection"])
RECALL_SAMPLES = Gauge("frameseek_recall_samples", "sampled searches behind frameseek_recall", ["collection"])
RECALL_TARGET = Gauge("frameseek_recall_target", "the collection's target recall", ["collection"])
SEARCH_EF = Gauge("frameseek_search_ef", "search breadth (ef) of requests that set none", ["collection"])
RECALL_GAUGES = (RECALL, RECALL_LOWER, RECALL_UPPER, RECALL_SAMPLES, RECALL_TARGET, SEARCH_EF)
RECALL_MEASURED = Counter("frameseek_recall_measured_total", "sampled searches re-run exactly")
RECALL_UNMEASURED = Counter(
    "frameseek_recall_unmeasured_total",
    "sampled searches dropped unmeasured (newer samples took their place while the CPU budget was spent)",
)
RECALL_CPU_SECONDS = Counter(
    "frameseek_recall_cpu_seconds_total", "CPU time of the exact re-runs (bounded by Settings.recall.cpu_share)"
)
STALLS = Counter(
    "frameseek_stalls_total",
    "ingests or event-loop turns that did not move for stall_report_s (each logged with every thread's stack)",
)


class FrontEndCollector:
    """The native front end's counters (front_end.py), read at scrape time: SearchByVector calls it
    answered itself, their total time, and calls it passed to the Python service (those are also
    in frameseek_requests_total, which counts only what Python answered)."""

    def __init__(self, front_end) -> None:
        self.front_end = front_end

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        s = self.front_end.stats()
        calls = CounterMetricFamily(
            "frameseek_front_end_calls", "calls through the native gRPC front end by path", labels=["path"]
        )
        calls.add_metric(["native"], s["fast"])
        calls.add_metric(["forwarded"], s["forwarded"])
        yield calls
        yield CounterMetricFamily(
            "frameseek_front_end_native_search_seconds",
            "time in native SearchByVector (parse, search, encode)",
            value=s["fast_seconds"],
        )
