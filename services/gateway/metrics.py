"""Prometheus metrics of one gateway: requests, latencies, upload bytes,
validation failures by code, culls. One registry per app (tests build many)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "bgimages_gateway_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bgimages_gateway_request_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.upload_bytes = Counter(
            "bgimages_gateway_upload_bytes", "bytes received in uploads", registry=self.registry
        )
        self.body_bytes = Counter(
            "bgimages_gateway_request_body_bytes",
            "request body bytes read, by route",
            ["route"],
            registry=self.registry,
        )
        self.header_checks = Counter(
            "bgimages_gateway_header_checks",
            "checks before sending (headers only), by outcome: passed, refused",
            ["outcome"],
            registry=self.registry,
        )
        self.uploads = Counter(
            "bgimages_gateway_uploads", "uploads accepted, by outcome", ["outcome"], registry=self.registry
        )
        self.upload_failures = Counter(
            "bgimages_gateway_upload_failures",
            "uploads refused, by error code (validation failures and size limit)",
            ["code"],
            registry=self.registry,
        )
        self.gone = Counter(
            "bgimages_gateway_gone_answers",
            "HiPS requests answered 410 because the image was culled or deleted",
            registry=self.registry,
        )
        self.store_writable = Gauge(
            "bgimages_gateway_store_writable",
            "1 when the object store took the gateway's last write probe, 0 when it refused it"
            " (uploads then answer 503 STORE_UNAVAILABLE; reads and tiles may still work)",
            registry=self.registry,
        )
        self.store_writable.set(1)
        self.store_usage = _StoreUsage()
        self.registry.register(self.store_usage)

    def upload_refused(self, code: str) -> None:
        self.upload_failures.labels(code=code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StoreUsage(Collector):
    """The catalog's usage figures (culls, bytes, images), as read at the last scrape."""

    def __init__(self) -> None:
        self.usage: Any = None  # catalog_pb2.Usage, or None when the catalog did not answer

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        u = self.usage
        if u is None:
            return
        yield CounterMetricFamily(
            "bgimages_culled_images", "images culled by the catalog so far", u.culled_images
        )
        for name, doc, value in [
            ("bgimages_store_used_bytes", "bytes stored for images", u.used_bytes),
            ("bgimages_store_capacity_bytes", "configured storage capacity", u.capacity_bytes),
            ("bgimages_images", "images in the catalog", u.image_count),
            ("bgimages_contents", "distinct stored contents", u.content_count),
        ]:
            yield GaugeMetricFamily(name, doc, value)
