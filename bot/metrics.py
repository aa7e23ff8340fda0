"""Prometheus metrics and a health check, on an optional port (CHARBOT_METRICS_ADDRESS).

    GET /metrics   replies by outcome, reply latency, batch sizes, the reply queue, errors,
                   the live model version, the served chat memory's age and size, the
                   last retraining run's outcome and time
    GET /healthz   200 while polling works (a getUpdates answered lately), else 503

`Metrics` counts what happens as it happens (replies, errors); what is a state (the
queue, the model version, the last run) is read when Prometheus scrapes, so nothing on
the reply path waits for it. The server is bound by `charbot run` before the model
loads (a port in use is one line then) and served from a thread once the bot runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from model.memory import ChatMemory
from storage import Database, last_finished_run

log = logging.getLogger(__name__)

REPLY_OUTCOMES = ("sent", "apology", "dropped", "undeliverable")
# Seconds from a message's arrival to its reply: most are tens of milliseconds; a group's
# flood limit (20 a minute) holds replies for seconds, a restart for minutes.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
HEALTH_PATH = "/healthz"


class Metrics:
    """The bot's counters, in a registry of its own (one per running bot)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.replies = Counter(
            "charbot_replies",
            "Replies to owed messages, by outcome (apology: the model failed or was busy; "
            "dropped: an unasked reply that failed; undeliverable: Telegram refused the chat)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in REPLY_OUTCOMES:
            self.replies.labels(outcome)
        self.latency = Histogram(
            "charbot_reply_latency_seconds",
            "From a message's arrival to its reply being sent",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "charbot_errors", "Exceptions while handling updates", registry=self.registry
        )

    def watch(self, services) -> None:
        """Also report the state of `services` (bot.services.Services) at each scrape."""
        self.registry.register(_StateCollector(services))


class _StateCollector(Collector):
    def __init__(self, services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        live = self.services.live
        version = GaugeMetricFamily("charbot_model_version", "The live model version")
        version.add_metric([], live.version or 0)
        yield version
        service = live.service
        if service is not None:
            queue = GaugeMetricFamily("charbot_reply_queue_depth", "Replies waiting for a batch")
            queue.add_metric([], service.waiting)
            yield queue
            sizes = dict(service.stats.batch_sizes)  # one copy: the loop thread adds to it
            yield _batch_histogram(sizes, service.max_batch)
        yield from _chat_memory(live.memory)
        yield from _last_run(self.services.db)


def _batch_histogram(sizes: dict[int, int], largest: int) -> HistogramMetricFamily:
    """Batches by size, in buckets of powers of two up to the largest batch."""
    bounds = [2**i for i in range(largest.bit_length()) if 2**i < largest] + [largest]
    buckets = []
    for bound in bounds:
        seen = sum(n for size, n in sizes.items() if size <= bound)
        buckets.append((str(float(bound)), seen))
    total = sum(sizes.values())
    buckets.append(("+Inf", total))
    family = HistogramMetricFamily("charbot_reply_batch_size", "Replies per generator call")
    family.add_metric([], buckets, sum(size * n for size, n in sizes.items()))
    return family


def _chat_memory(memory: ChatMemory | None) -> Iterator[Metric]:
    """The served memory's size (0: none served) and, while one is, its age: how stale
    what the bot picked up from its users is (refreshes every few minutes while people
    write; an age that keeps growing on a busy bot means refreshes fail)."""
    size = GaugeMetricFamily(
        "charbot_chat_memory_bytes", "Bytes of n-gram counts in the served chat memory"
    )
    size.add_metric([], memory.size_bytes if memory is not None else 0)
    yield size
    if memory is None:
        return
    age = GaugeMetricFamily(
        "charbot_chat_memory_age_seconds", "Seconds since the served chat memory was counted"
    )
    age.add_metric([], memory.info.age_seconds())
    yield age


def _last_run(db: Database) -> Iterator[Metric]:
    try:
        with db.read() as session:
            run = last_finished_run(session)
            outcome = (run.status, run.finished_at) if run is not None else None
    except Exception as exc:  # a scrape never fails for a busy or broken database
        log.warning("metrics: could not read the last run: %s", exc)
        return
    if outcome is None:
        return
    status, finished = outcome
    finished_at = GaugeMetricFamily(
        "charbot_last_run_finished_timestamp_seconds", "When the last retraining run ended"
    )
    finished_at.add_metric([], finished.timestamp() if finished else 0)
    yield finished_at
    info = GaugeMetricFamily(
        "charbot_last_run_status", "The last retraining run's outcome (1 for it)", labels=["status"]
    )
    info.add_metric([status], 1)
    yield info


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass  # a line per scrape would drown the bot's log


class MetricsServer:
    """The HTTP server of /metrics and /healthz; bound at construction (OSError when the
    address is taken), serving once `serve` is called."""

    def __init__(self, host: str, port: int) -> None:
        self._metrics: Metrics | None = None
        self._healthy: Callable[[], bool] = lambda: False
        self._server: WSGIServer = make_server(host, port, self._app, handler_class=_QuietHandler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_port

    def serve(self, metrics: Metrics, healthy: Callable[[], bool]) -> None:
        self._metrics, self._healthy = metrics, healthy
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def _app(self, environ, start_response):
        if environ.get("PATH_INFO") == HEALTH_PATH:
            ok = self._healthy()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"not polling\n"]
        if self._metrics is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"starting\n"]
        return make_wsgi_app(self._metrics.registry)(environ, start_response)


def recently(last: Callable[[], float | None], within: float) -> Callable[[], bool]:
    """A health check: true while `last()` (a time.monotonic() stamp) is under `within`
    seconds old."""

    def check() -> bool:
        stamp = last()
        return stamp is not None and time.monotonic() - stamp < within

    return check
