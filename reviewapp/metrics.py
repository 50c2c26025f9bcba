"""Prometheus metrics: serving counters, and job and queue numbers read when scraped.

Serving code calls ``observe_served`` and ``observe_shadow``; ``GET /metrics`` renders
``scrape()``. Labels are a project's slug, a version's number as a string (``"3"``, as
the API's ``"version": 3``), its stage and the runtime: never an image, client or user,
which would make a series per request.

Under gunicorn each worker counts on its own; with ``PROMETHEUS_MULTIPROC_DIR`` set
(``loupe_run`` sets it) prometheus_client keeps the counts in files there and a scrape
adds up every process's files. The job and queue numbers come from the database and the
broker at scrape time, so any process answers them alike.
"""

import logging
import os

from django.conf import settings
from django.db.models import Count
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .runtime import broker_client

__all__ = [
    "BROKER_TIMEOUT_S",
    "CONTENT_TYPE_LATEST",
    "JobsCollector",
    "observe_served",
    "observe_shadow",
    "scrape",
    "scrape_registry",
]

logger = logging.getLogger(__name__)

# A scrape waits this long for the broker to connect, then as long for the LLENs: about
# a second at most, tried once.
BROKER_TIMEOUT_S = 0.5

# One observation per served call (a batch is one): a warm ONNX answer takes milliseconds,
# a cold torch load of a large model tens of seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

SERVED_LABELS = ("project", "version", "stage", "runtime")
REVIEW_LABELS = ("project", "version", "stage")
SHADOW_LABELS = ("project", "version")

PREDICTIONS = Counter("loupe_predictions", "Images answered by a serving version.", SERVED_LABELS)
PREDICTION_LATENCY = Histogram(
    "loupe_prediction_latency_seconds",
    "Time to answer one predict call (one image or one batch).",
    SERVED_LABELS,
    buckets=LATENCY_BUCKETS,
)
LOW_CONFIDENCE = Counter(
    "loupe_low_confidence",
    "Answers below the project's review confidence.",
    REVIEW_LABELS,
)
OUT_OF_DOMAIN = Counter(
    "loupe_out_of_domain",
    "Answers below the version's out-of-domain threshold.",
    REVIEW_LABELS,
)
SHADOW_ANSWERS = Counter(
    "loupe_shadow_answers",
    "Images a shadow version answered beside the live one.",
    SHADOW_LABELS,
)
SHADOW_DISAGREEMENTS = Counter(
    "loupe_shadow_disagreements",
    "Shadow answers whose label differs from the live answer.",
    SHADOW_LABELS,
)


def observe_served(
    *,
    project: str,
    version: int,
    stage: str,
    runtime: str,
    latency_s: float,
    count: int,
    low_confidence: int,
    out_of_domain: int,
) -> None:
    """Count one predict call of ``count`` images answered by a version at ``stage``."""
    served = {"project": project, "version": str(version), "stage": stage}
    PREDICTIONS.labels(**served, runtime=runtime).inc(count)
    PREDICTION_LATENCY.labels(**served, runtime=runtime).observe(latency_s)
    LOW_CONFIDENCE.labels(**served).inc(low_confidence)
    OUT_OF_DOMAIN.labels(**served).inc(out_of_domain)


def observe_shadow(
    *, project: str, version: int, runtime: str, compared: int, disagreed: int
) -> None:
    """Count a shadow version's answers compared with the live ones, and the disagreements.

    ``runtime`` is not a label: answers and disagreements keep the same labels, so
    their ratio is a plain division in PromQL.
    """
    shadow = {"project": project, "version": str(version)}
    SHADOW_ANSWERS.labels(**shadow).inc(compared)
    SHADOW_DISAGREEMENTS.labels(**shadow).inc(disagreed)


def _queues() -> list[str]:
    """The Celery queues Loupe sends to: the default one and those named in the routes."""
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    return sorted({settings.CELERY_TASK_DEFAULT_QUEUE, *routed})


def _queue_keys(queue: str) -> list[str]:
    """The Redis lists holding a queue's messages: kombu keeps one per priority step."""
    steps = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("priority_steps", PRIORITY_STEPS)
    return [queue if step == 0 else f"{queue}{Channel.sep}{step}" for step in steps]


def _status_counts(model) -> dict[str, int]:
    counts = dict.fromkeys(model.Status.values, 0)
    for row in model.objects.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


class JobsCollector(Collector):
    """Training runs and label audits by status, and Celery queue depths, read when scraped."""

    def describe(self):
        # Names only, so registering neither queries the database nor calls the broker.
        return [
            GaugeMetricFamily("loupe_training_runs", "", labels=["status"]),
            GaugeMetricFamily("loupe_label_audits", "", labels=["status"]),
            GaugeMetricFamily("loupe_queue_depth", "", labels=["queue"]),
            GaugeMetricFamily("loupe_broker_up", ""),
        ]

    def collect(self):
        from .models import LabelAudit, TrainingRun

        for name, model, text in (
            ("loupe_training_runs", TrainingRun, "Training runs by status."),
            ("loupe_label_audits", LabelAudit, "Label audits by status."),
        ):
            family = GaugeMetricFamily(name, text, labels=["status"])
            for status, n in _status_counts(model).items():
                family.add_metric([status], n)
            yield family

        depths = self._queue_depths()
        up = GaugeMetricFamily("loupe_broker_up", "1 if the Celery broker answered the scrape.")
        up.add_metric([], 0 if depths is None else 1)
        yield up
        if depths is not None:
            family = GaugeMetricFamily(
                "loupe_queue_depth", "Messages waiting in a Celery queue.", labels=["queue"]
            )
            for queue, depth in depths.items():
                family.add_metric([queue], depth)
            yield family

    def _queue_depths(self) -> dict[str, int] | None:
        """Each queue's waiting messages, or None when the broker does not answer in time."""
        queues = _queues()
        client = broker_client(settings.CELERY_BROKER_URL, BROKER_TIMEOUT_S, retry=False)
        try:
            with client.pipeline(transaction=False) as pipe:
                for queue in queues:
                    for key in _queue_keys(queue):
                        pipe.llen(key)
                lengths = iter(pipe.execute())
        except Exception as exc:  # a broker that is down must not fail the scrape
            logger.warning("Metrics: the broker did not answer: %s", exc)
            return None
        finally:
            client.close()
        return {queue: sum(next(lengths) for _ in _queue_keys(queue)) for queue in queues}


JOBS_COLLECTOR = JobsCollector()
# Single-process scrapes read the default registry; multiprocess ones add it to their own.
REGISTRY.register(JOBS_COLLECTOR)


def scrape_registry(multiproc_dir: str | None = None) -> CollectorRegistry:
    """The registry a scrape renders: every process's files in multiprocess mode, else ours."""
    multiproc_dir = multiproc_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not multiproc_dir:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=multiproc_dir)
    registry.register(JOBS_COLLECTOR)
    return registry


def scrape() -> bytes:
    """The Prometheus text format of every metric (serve it as ``CONTENT_TYPE_LATEST``)."""
    return generate_latest(scrape_registry())
