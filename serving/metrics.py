"""Request count and latency by model, version, signature, API and status, in Prometheus text format.

Metric names follow TF Serving's (`:tensorflow:serving:request_count`, `..._request_latency`) so
dashboards built for the real server read these too; the labels add version and signature.
Each server has its own registry: two servers in one process (tests) do not share counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LABELS = ("model_name", "model_version", "signature_name", "API", "status")
# Microseconds, as TF Serving reports latency: 100 us .. ~10 s.
_BUCKETS_US = tuple(100 * 2 ** i for i in range(17))


class RequestMetrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self._count = Counter(":tensorflow:serving:request_count", "Requests answered, by outcome",
                              _LABELS, registry=self.registry)
        self._latency = Histogram(":tensorflow:serving:request_latency", "Request latency in microseconds",
                                  _LABELS, buckets=_BUCKETS_US, registry=self.registry)

    def observe(self, api: str, model: str, version: str, signature: str, status: str, seconds: float) -> None:
        labels = (model, version, signature, api, status)
        self._count.labels(*labels).inc()
        self._latency.labels(*labels).observe(seconds * 1e6)

    def render(self) -> bytes:
        return generate_latest(self.registry)
