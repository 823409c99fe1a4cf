"""Prometheus metrics of one gateway: requests, latencies, upload bytes,
validation failures by code, culls. One registry per app (tests build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


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
        self.uploads = Counter(
            "bgimages_gateway_uploads", "uploads accepted, by outcome", ["outcome"], registry=self.registry
        )
        self.upload_failures = Counter(
            "bgimages_gateway_upload_failures",
            "uploads refused, by error code (validation failures and size limit)",
            ["code"],
            registry=self.registry,
        )
        self.culls = Counter(
            "bgimages_gateway_culled_images_seen",
            "HiPS requests answered 410 because the image was culled or deleted",
            registry=self.registry,
        )

    def upload_refused(self, code: str) -> None:
        self.upload_failures.labels(code=code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
