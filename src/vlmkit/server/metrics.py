"""``GET /metrics``: the server's counters in Prometheus' text format, over ``prometheus-client``.

Each server has its own registry (two servers in one process, as in tests, never mix their counts).
What is counted, and where it is counted from:

- requests by model, deployment and status, their latency and time to first token: the gateway
  (one row per attempt at a deployment, so a failover shows as an error on one and a 200 on the
  next) and the local engine (``deployment="local"``);
- images in requests, their bytes received, their estimated tokens: the chat route, once the images
  are read; bytes sent upstream and images resized or converted for a deployment: the gateway;
- images encoded and embedding-cache hits: the local engine's own report of each prediction;
- queue depth (predictions running or waiting on the local engine, requests in flight and estimated
  tokens outstanding per deployment), upstream errors, ejections and readmissions, and whether
  each deployment is in service.

Without ``prometheus-client`` (``pip install 'vlmkit[gateway]'``) the route answers 501 and nothing is counted.

Counting stays off the request's path as far as it can: a labelled child is looked up in
prometheus-client once per label values and kept (:meth:`Metrics.at`), and the per-deployment load
gauges read the fleet's own counts when scraped (:meth:`Metrics.watch_load`) instead of being set
twice on every request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vlmkit.server.errors import APIError, response_for

if TYPE_CHECKING:
    from vlmkit.prediction import PredictionResult
    from vlmkit.server.fleet import RequestCost

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The server's counters; every method is a no-op when ``prometheus-client`` is missing."""

    def __init__(self) -> None:
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        try:
            import prometheus_client as prom
        except ImportError:
            self.registry: Any = None
            return
        self.registry = r = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "vlmkit_requests",
            "Chat requests by model, deployment and status",
            ["model", "deployment", "status"],
            registry=r,
        )
        self.latency = prom.Histogram(
            "vlmkit_request_duration_seconds",
            "Time to the whole answer",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = prom.Histogram(
            "vlmkit_time_to_first_token_seconds", "Time to the first token", ["model"], buckets=TTFT_BUCKETS, registry=r
        )
        self.images = prom.Counter("vlmkit_images", "Images in requests", ["model"], registry=r)
        self.image_bytes_received = prom.Counter(
            "vlmkit_image_bytes_received", "Bytes of images as the callers sent them", ["model"], registry=r
        )
        self.image_bytes_sent = prom.Counter(
            "vlmkit_image_bytes_sent", "Bytes of images as sent to the deployments", ["model", "deployment"], registry=r
        )
        self.images_transformed = prom.Counter(
            "vlmkit_images_transformed", "Images resized or converted for a deployment", ["model", "change"], registry=r
        )
        self.image_tokens = prom.Counter(
            "vlmkit_image_tokens_estimated", "Estimated prompt tokens of the images in requests", ["model"], registry=r
        )
        self.images_encoded = prom.Counter(
            "vlmkit_images_encoded", "Images through a local model's vision encoder", ["model"], registry=r
        )
        self.cache_hits = prom.Counter(
            "vlmkit_embedding_cache_hits", "Images whose embeddings a local model already held", ["model"], registry=r
        )
        self.upstream_errors = prom.Counter(
            "vlmkit_upstream_errors", "Failed attempts at a deployment", ["model", "deployment"], registry=r
        )
        self.ejections = prom.Counter(
            "vlmkit_upstream_ejections", "Deployments taken out of service", ["model", "deployment"], registry=r
        )
        self.readmissions = prom.Counter(
            "vlmkit_upstream_readmissions", "Deployments taken back into service", ["model", "deployment"], registry=r
        )
        self.queue_depth = prom.Gauge(
            "vlmkit_queue_depth", "Predictions running or waiting on the local engine", registry=r
        )
        self.upstream_inflight = prom.Gauge(
            "vlmkit_upstream_inflight", "Requests in flight per deployment", ["model", "deployment"], registry=r
        )
        self.upstream_outstanding = prom.Gauge(
            "vlmkit_upstream_outstanding_tokens",
            "Estimated prompt tokens in flight per deployment",
            ["model", "deployment"],
            registry=r,
        )
        self.upstream_up = prom.Gauge(
            "vlmkit_upstream_up",
            "1 while a deployment is in service, 0 while ejected",
            ["model", "deployment"],
            registry=r,
        )

    @property
    def enabled(self) -> bool:
        return self.registry is not None

    def at(self, metric: Any, *labels: str) -> Any:
        """``metric``'s child for ``labels``, kept: prometheus-client's ``labels()`` validates and locks
        on every call, and a request would make about ten of them."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # --- what is observed -----------------------------------------------------------------------

    def request(
        self, model: str, deployment: str, status: int, duration: float | None = None, ttft: float | None = None
    ) -> None:
        if not self.enabled:
            return
        self.at(self.requests, model, deployment, str(status)).inc()
        if duration is not None:
            self.at(self.latency, model).observe(duration)
        if ttft is not None:
            self.at(self.ttft, model).observe(ttft)

    def chat_images(self, model: str, cost: RequestCost) -> None:
        """The images of a request as they arrived (after reading, before any rendering): their number,
        bytes and estimated tokens, from the request's one estimate."""
        if not self.enabled or not cost.image_count:
            return
        self.at(self.images, model).inc(cost.image_count)
        self.at(self.image_bytes_received, model).inc(cost.image_bytes)
        self.at(self.image_tokens, model).inc(cost.images)

    def image_sent(self, model: str, deployment: str, sent_bytes: int, resized: bool, converted: bool) -> None:
        if not self.enabled:
            return
        self.at(self.image_bytes_sent, model, deployment).inc(sent_bytes)
        if resized:
            self.at(self.images_transformed, model, "resized").inc()
        if converted:
            self.at(self.images_transformed, model, "converted").inc()

    def local_result(self, model: str, result: PredictionResult) -> None:
        if not self.enabled:
            return
        stats = result.stats
        self.at(self.images_encoded, model).inc(stats.images_encoded)
        self.at(self.cache_hits, model).inc(stats.images_reused)
        ttft = stats.time_to_first_token_sec if stats.predicted_tokens else None
        self.request(model, "local", 200, stats.total_time_sec, ttft)

    def upstream_failed(self, model: str, deployment: str) -> None:
        if self.enabled:
            self.at(self.upstream_errors, model, deployment).inc()

    def health_changed(self, model: str, deployment: str, *, up: bool) -> None:
        if not self.enabled:
            return
        self.at(self.readmissions if up else self.ejections, model, deployment).inc()
        self.deployment_up(model, deployment, up=up)

    def deployment_up(self, model: str, deployment: str, *, up: bool) -> None:
        if self.enabled:
            self.at(self.upstream_up, model, deployment).set(1 if up else 0)

    def watch_load(
        self, model: str, deployment: str, inflight: Callable[[], int], outstanding_tokens: Callable[[], int]
    ) -> None:
        """The deployment's requests in flight and tokens outstanding, read from its counts when scraped."""
        if not self.enabled:
            return
        self.at(self.upstream_inflight, model, deployment).set_function(lambda: float(inflight()))
        self.at(self.upstream_outstanding, model, deployment).set_function(lambda: float(outstanding_tokens()))

    def watch_queue(self, depth: Callable[[], int]) -> None:
        if self.enabled:
            self.queue_depth.set_function(lambda: float(depth()))

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        data: bytes = generate_latest(self.registry)
        return data


async def metrics(request: Request) -> Response:
    m: Metrics = request.app.state.vlmkit.metrics
    if not m.enabled:
        return response_for(
            APIError(
                "metrics need prometheus-client, which is not installed: pip install 'vlmkit[gateway]'",
                501,
                code="not_implemented",
            )
        )
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(m.exposition(), media_type=CONTENT_TYPE_LATEST)


ROUTES = [Route("/metrics", metrics, methods=["GET"])]
