"""Prometheus metrics of one App (own registry, so several apps in one process don't collide).

Plugins add their own metrics on ``app.metrics.registry``; the ``metrics`` plugin serves them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The core's metrics: connections, events, ack latency, database write batches."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge(
            "happy_socket_connections",
            "Open sockets by client type.",
            ["client_type"],
            registry=self.registry,
        )
        self.events = Counter(
            "happy_socket_events",
            "Handled events by name and outcome "
            "(ok, error = documented error, internal_error, rejected = refused before the handler).",
            ["event", "outcome"],
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "happy_socket_ack_seconds",
            "Time from an event's start to its ack, by event.",
            ["event"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.db_batch_size = Histogram(
            "happy_socket_db_write_batch_size",
            "Atomic units committed together (SQLite group commit).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        # event names come from the registry (bounded), so these caches are too
        self._event_counters: dict[tuple[str, str], Counter] = {}
        self._ack_histograms: dict[str, Histogram] = {}
        self.http_requests = Counter(
            "happy_socket_http_requests",
            "HTTP requests by route name and outcome (ok, error = documented error, internal_error).",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "happy_socket_http_seconds",
            "Time to answer an HTTP request, by route name.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.paused_sockets = Gauge(
            "happy_socket_paused_sockets",
            "Sockets whose reader waits for room (their lane or concurrency bound is full).",
            registry=self.registry,
        )
        self.paused_seconds = Histogram(
            "happy_socket_paused_seconds",
            "How long a paused socket's reader waited for room.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.send_overflows = Counter(
            "happy_socket_send_overflows",
            "Sockets closed because more than max_queued_bytes waited to be sent to them.",
            registry=self.registry,
        )
        self.handshake_refusals = Counter(
            "happy_socket_handshake_refusals",
            "Refused handshakes by reason.",
            ["reason"],
            registry=self.registry,
        )

    def event_done(self, event: str, outcome: str, seconds: float) -> None:
        """Count one handled event and its latency (labelled children cached: hot path)."""
        key = (event, outcome)
        counter = self._event_counters.get(key)
        if counter is None:
            counter = self._event_counters[key] = self.events.labels(event, outcome)
        counter.inc()
        histogram = self._ack_histograms.get(event)
        if histogram is None:
            histogram = self._ack_histograms[event] = self.ack_seconds.labels(event)
        histogram.observe(seconds)

    def request_done(self, route: str, outcome: str, seconds: float) -> None:
        """Count one answered HTTP request and its latency (route names are bounded)."""
        self.http_requests.labels(route, outcome).inc()
        self.http_seconds.labels(route).observe(seconds)
