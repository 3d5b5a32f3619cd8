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

Counting stays off the request's path as far as it can: the counters are plain numbers added under
one lock and written out when scraped (:class:`Counts`, a prometheus-client collector), a histogram's
labelled child is looked up once per label values and kept (:meth:`Metrics.at`), and the
per-deployment load gauges read the fleet's own counts when scraped (:meth:`Metrics.watch_load`)
instead of being set twice on every request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
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


class Counts:
    """Counters kept as plain numbers and exposed when scraped: a request adds to a dict under one lock,
    where prometheus-client's ``Counter`` would validate and lock on every call (this is its
    custom-collector way, and the exposition is the same: ``NAME_total`` by labels)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._specs: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._values: dict[tuple[str, tuple[str, ...]], float] = {}

    def declare(self, name: str, documentation: str, labels: list[str]) -> str:
        """A counter called ``name`` (exposed as ``name_total``) with these label names; its name back."""
        self._specs[name] = (documentation, tuple(labels))
        return name

    def add(self, name: str, *labels: str, amount: float = 1.0) -> None:
        key = (name, labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        with self._lock:
            values = list(self._values.items())
        for name, (documentation, labels) in self._specs.items():
            family = CounterMetricFamily(name, documentation, labels=labels)
            for (of, label_values), value in values:
                if of == name:
                    family.add_metric(label_values, value)
            yield family


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
        self._counts = counts = Counts()
        r.register(counts)
        self.requests = counts.declare(
            "vlmkit_requests", "Chat requests by model, deployment and status", ["model", "deployment", "status"]
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
        self.images = counts.declare("vlmkit_images", "Images in requests", ["model"])
        self.image_bytes_received = counts.declare(
            "vlmkit_image_bytes_received", "Bytes of images as the callers sent them", ["model"]
        )
        self.image_bytes_sent = counts.declare(
            "vlmkit_image_bytes_sent", "Bytes of images as sent to the deployments", ["model", "deployment"]
        )
        self.images_transformed = counts.declare(
            "vlmkit_images_transformed", "Images resized or converted for a deployment", ["model", "change"]
        )
        self.image_tokens = counts.declare(
            "vlmkit_image_tokens_estimated", "Estimated prompt tokens of the images in requests", ["model"]
        )
        self.images_encoded = counts.declare(
            "vlmkit_images_encoded", "Images through a local model's vision encoder", ["model"]
        )
        self.cache_hits = counts.declare(
            "vlmkit_embedding_cache_hits", "Images whose embeddings a local model already held", ["model"]
        )
        self.upstream_errors = counts.declare(
            "vlmkit_upstream_errors", "Failed attempts at a deployment", ["model", "deployment"]
        )
        self.ejections = counts.declare(
            "vlmkit_upstream_ejections", "Deployments taken out of service", ["model", "deployment"]
        )
        self.readmissions = counts.declare(
            "vlmkit_upstream_readmissions", "Deployments taken back into service", ["model", "deployment"]
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
        self._counts.add(self.requests, model, deployment, str(status))
        if duration is not None:
            self.at(self.latency, model).observe(duration)
        if ttft is not None:
            self.at(self.ttft, model).observe(ttft)

    def chat_images(self, model: str, cost: RequestCost) -> None:
        """The images of a request as they arrived (after reading, before any rendering): their number,
        bytes and estimated tokens, from the request's one estimate."""
        if not self.enabled or not cost.image_count:
            return
        self._counts.add(self.images, model, amount=cost.image_count)
        self._counts.add(self.image_bytes_received, model, amount=cost.image_bytes)
        self._counts.add(self.image_tokens, model, amount=cost.images)

    def image_sent(self, model: str, deployment: str, sent_bytes: int, resized: bool, converted: bool) -> None:
        if not self.enabled:
            return
        self._counts.add(self.image_bytes_sent, model, deployment, amount=sent_bytes)
        if resized:
            self._counts.add(self.images_transformed, model, "resized")
        if converted:
            self._counts.add(self.images_transformed, model, "converted")

    def local_result(self, model: str, result: PredictionResult) -> None:
        if not self.enabled:
            return
        stats = result.stats
        self._counts.add(self.images_encoded, model, amount=stats.images_encoded)
        self._counts.add(self.cache_hits, model, amount=stats.images_reused)
        ttft = stats.time_to_first_token_sec if stats.predicted_tokens else None
        self.request(model, "local", 200, stats.total_time_sec, ttft)

    def upstream_failed(self, model: str, deployment: str) -> None:
        if self.enabled:
            self._counts.add(self.upstream_errors, model, deployment)

    def health_changed(self, model: str, deployment: str, *, up: bool) -> None:
        if not self.enabled:
            return
        self._counts.add(self.readmissions if up else self.ejections, model, deployment)
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
