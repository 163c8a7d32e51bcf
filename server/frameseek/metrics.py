"""Prometheus metrics (served on Settings.metrics_address)."""
from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("frameseek_requests_total", "RPCs by method and status code", ["method", "code"])
LATENCY = Histogram("frameseek_request_seconds", "RPC latency by method", ["method"],
                    buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10, 30, 60, 300))
INDEX_VECTORS = Gauge("frameseek_index_vectors", "vectors in a collection's index", ["collection"])
INGESTED = Counter("frameseek_ingested_total", "items indexed", ["kind"])
INGEST_REALTIME = Histogram("frameseek_ingest_realtime_factor", "media seconds indexed per wall-clock second",
                            buckets=(.5, 1, 2, 5, 10, 20, 50, 100, 200, 500))
ACTIVE_INGESTS = Gauge("frameseek_active_ingests", "ingests queued or running")
READY = Gauge("frameseek_ready", "1 when the index is loaded and the server serves")
