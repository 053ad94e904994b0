"""Prometheus metrics shared by every process (one registry per process)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

HTTP_REQUESTS = Counter(
    "tribune_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "tribune_http_request_duration_seconds", "HTTP request latency", ["service", "method", "route"]
)
EVENTS_HANDLED = Counter(
    "tribune_events_handled_total",
    "Events handled by consumers",
    ["service", "topic", "outcome"],  # outcome: ok | duplicate | dlq
)
HANDLER_SECONDS = Histogram(
    "tribune_event_handler_seconds",
    "Duration of one consumer batch transaction (handlers and processed ids)",
    ["service", "topic"],
)
BATCH_SIZE = Histogram(
    "tribune_consumer_batch_events",
    "Events per partition batch handed to the handlers",
    ["service", "topic"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
HANDLER_RETRIES = Counter(
    "tribune_event_retries_total", "Event handler retries", ["service", "topic"]
)
DLQ_MESSAGES = Counter(
    "tribune_dlq_messages_total", "Messages parked on a DLQ", ["service", "topic"]
)
CONSUMER_LAG = Gauge(
    "tribune_consumer_lag", "Messages behind the high watermark", ["group", "topic", "partition"]
)
EVENTS_PUBLISHED = Counter(
    "tribune_events_published_total", "Events published to Kafka", ["service", "topic"]
)
OUTBOX_BACKLOG = Gauge("tribune_outbox_backlog", "Outbox events not yet published", ["service"])
MESSAGES = Counter(
    "tribune_messages_total", "Messages by channel and status", ["channel", "status"]
)
WEBHOOK_REFUSALS = Counter(
    "tribune_webhook_refusals_total",
    "Signed webhooks refused (missing, wrong or stale signature; nothing recorded)",
    ["service", "route"],
)


def render_latest() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
