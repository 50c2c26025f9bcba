"""Shadow answers: stored, never sent, answered by one background thread in idle time."""

import logging
import queue
import threading
import time
from collections import defaultdict

from django.db import close_old_connections, connection

from .. import metrics
from ..models import Prediction
from .answers import _answers, _rows
from .model_cache import runtime_for

__all__ = ["shadow_wait"]

logger = logging.getLogger(__name__)

# Requests being answered now, and when the last one ended: shadows wait for idle time.
_busy = {"requests": 0, "since": 0.0}
_busy_lock = threading.Lock()


def _request_started() -> None:
    with _busy_lock:
        _busy["requests"] += 1


def _request_ended() -> None:
    with _busy_lock:
        _busy["requests"] -= 1
        _busy["since"] = time.monotonic()


def _shadows_answer_many(jobs: list[dict]) -> None:
    """Every shadow version answers the images of ``jobs`` (requests), in one batch per
    version; stored with is_shadow=True. Each job: project, shadows, decoded, request_ids,
    files, common."""
    rows = []
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for job in jobs:
        groups[(job["project"].pk, tuple(v.pk for v in job["shadows"]))].append(job)
    for group in groups.values():
        decoded = [d for job in group for d in job["decoded"]]
        for shadow in group[0]["shadows"]:
            try:
                answers, shadow_ms = _answers(shadow, decoded)
            except Exception:  # a shadow must never break serving, nor the other shadows
                logger.exception("Shadow version %s failed to answer", shadow.pk)
                continue
            start, disagreed = 0, 0
            for job in group:
                n = len(job["decoded"])
                served_labels = job.get("served_labels") or []
                disagreed += sum(
                    a.label != label
                    for a, label in zip(answers[start : start + n], served_labels, strict=False)
                )
                rows += _rows(
                    project=job["project"],
                    version=shadow,
                    answers=answers[start : start + n],
                    request_ids=job["request_ids"],
                    files=job["files"],
                    latency_ms=shadow_ms,
                    is_shadow=True,
                    common=job["common"],
                )
                start += n
            metrics.observe_shadow(
                project=group[0]["project"].slug,
                version=shadow.number,
                runtime=runtime_for(shadow),
                compared=len(decoded),
                disagreed=disagreed,
            )
    if rows:
        Prediction.objects.bulk_create(rows)


def _shadows_answer(**job) -> None:
    _shadows_answer_many([job])


# Shadow answers wait in a queue for one background thread. It answers them in batches of
# up to SHADOW_BATCH_IMAGES when the process is idle (no request for SHADOW_IDLE_S), so
# shadows take no time from served requests; under sustained load it stops waiting once
# SHADOW_BACKLOG_IMAGES are queued, and shadows then share the cores with requests.
_shadow_queue: queue.Queue = queue.Queue()
_shadow_thread: threading.Thread | None = None
_shadow_lock = threading.Lock()
_shadow_backlog = {"images": 0}
SHADOW_BATCH_IMAGES = 32
SHADOW_IDLE_S = 0.05
SHADOW_BACKLOG_IMAGES = 512


def _wait_for_idle() -> None:
    """Return once no request has run for SHADOW_IDLE_S, or the backlog is too long.

    It sleeps until the moment the process could first be idle, so under steady traffic
    it wakes every SHADOW_IDLE_S, not every 10 ms: each waking takes the GIL from the
    request being answered.
    """
    while _shadow_backlog["images"] < SHADOW_BACKLOG_IMAGES:
        with _busy_lock:
            busy, since = _busy["requests"], _busy["since"]
        wait = SHADOW_IDLE_S if busy else since + SHADOW_IDLE_S - time.monotonic()
        if wait <= 0:
            return
        time.sleep(wait)


def _shadow_loop() -> None:
    while True:
        jobs = [_shadow_queue.get()]
        _wait_for_idle()
        images = len(jobs[0]["decoded"])
        while images < SHADOW_BATCH_IMAGES:
            try:
                job = _shadow_queue.get_nowait()
            except queue.Empty:
                break
            jobs.append(job)
            images += len(job["decoded"])
        close_old_connections()
        try:
            _shadows_answer_many(jobs)
        except Exception:
            logger.exception("Shadow answers of %s request(s) were lost", len(jobs))
        finally:
            connection.close()  # this thread's own connection
            with _shadow_lock:
                _shadow_backlog["images"] -= images
            for _ in jobs:
                _shadow_queue.task_done()


def _shadow_submit(job: dict) -> None:
    global _shadow_thread
    with _shadow_lock:
        if _shadow_thread is None or not _shadow_thread.is_alive():
            _shadow_thread = threading.Thread(target=_shadow_loop, name="loupe-shadow", daemon=True)
            _shadow_thread.start()
        _shadow_backlog["images"] += len(job["decoded"])
    _shadow_queue.put(job)


def shadow_wait(timeout: float | None = None) -> bool:
    """Wait until the shadow answers queued so far are stored (tests, benches, shutdown).

    False if ``timeout`` seconds passed first.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while _shadow_queue.unfinished_tasks:
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
