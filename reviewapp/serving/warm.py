"""Warm models: a web process loads every serving version before traffic needs it.

At process start (gunicorn's ``post_worker_init``, before the worker accepts a request)
``serving_models_warm()`` loads the live, limited and shadow versions of every project,
answers one blank image with each (so the first real request finds every buffer
allocated) and calibrates their out-of-domain threshold. Then a daemon thread looks again
every ``LOUPE_WARM_POLL_SECONDS``, and at once when this process changes a version's stage,
loading what entered serving and dropping what left it. Only web processes start it: a
Celery worker never serves, and holding models there would only cost memory.
"""

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection, transaction

from ..models import ModelVersion
from .model_cache import ModelUnavailable, model_cache_current, model_for, models_keep_only
from .ood import version_ood_calibrate
from .routing import SERVING_STAGES

__all__ = ["serving_models_warm", "warmer_running", "warmer_start", "warmer_stop", "warm_now"]

logger = logging.getLogger(__name__)


def model_warm(version: ModelVersion) -> None:
    """Load ``version``, run it once, and fix its OOD threshold, so no request pays for it."""
    model_for(version).warm()
    version_ood_calibrate(version=version)


def serving_models_warm(*, between=None) -> list[int]:
    """Load every serving version this process lacks (or holds loaded from another file or
    runtime than it would use now), and drop the ones that stopped serving.

    Returns the ids loaded now. A version that cannot load is logged and skipped: its
    requests answer 503 with the reason, and the others still warm. ``between()`` is called
    after each version (gunicorn's heartbeat, so a long warm-up is not taken for a hang).
    """
    versions = list(
        ModelVersion.objects.filter(stage__in=SERVING_STAGES).only(
            "pk",
            "project_id",
            "number",
            "stage",
            "export_file",
            "export_sha256",
            "onnx_file",
            "onnx_sha256",
            "onnx_spec",
            "onnx_error",
            "ood_method",
            "ood_threshold",
        )
    )
    models_keep_only({v.pk for v in versions})
    loaded = []
    for version in versions:
        if model_cache_current(version):
            continue
        try:
            model_warm(version)
        except ModelUnavailable as exc:
            logger.error("Serving version %s not warmed: %s", version.pk, exc)
            continue
        finally:
            if between is not None:
                between()
        loaded.append(version.pk)
    return loaded


class _Warmer:
    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.done = threading.Condition()
        self.rounds = 0  # finished passes, so a caller can wait for the next one
        self.busy = False  # a pass is running: its query may predate what a caller changed

    def loop(self, every: float) -> None:
        while not self.stop.is_set():
            self.wake.wait(timeout=every)
            self.wake.clear()
            if self.stop.is_set():
                break
            with self.done:
                self.busy = True
            close_old_connections()
            try:
                serving_models_warm()
            except Exception:  # a database hiccup must not end warming for good
                logger.exception("Warming the serving models failed; trying again")
            finally:
                connection.close()  # this thread's own connection
                with self.done:
                    self.rounds += 1
                    self.busy = False
                    self.done.notify_all()


_warmer = _Warmer()
_warmer_lock = threading.Lock()


def warmer_start(*, every: float | None = None, warm_first: bool = True, between=None) -> None:
    """Warm the serving models now (``warm_first``), then keep them warm in a thread."""
    if warm_first:
        serving_models_warm(between=between)
    with _warmer_lock:
        if _warmer.thread is not None and _warmer.thread.is_alive():
            return
        _warmer.stop.clear()
        _warmer.thread = threading.Thread(
            target=_warmer.loop,
            args=(settings.LOUPE_WARM_POLL_SECONDS if every is None else every,),
            name="loupe-warm",
            daemon=True,
        )
        _warmer.thread.start()


def warmer_running() -> bool:
    return _warmer.thread is not None and _warmer.thread.is_alive()


def warmer_stop(timeout: float = 5.0) -> None:
    _warmer.stop.set()
    _warmer.wake.set()
    if _warmer.thread is not None:
        _warmer.thread.join(timeout)
    _warmer.thread = None


def warm_now(*, timeout: float = 60.0) -> bool:
    """Have the warmer look at once and wait for that pass (False: it took over ``timeout``).

    Without a warmer (a Celery worker, a management command) nothing is loaded.
    """
    if not warmer_running():
        return False
    with _warmer.done:
        target = _warmer.rounds + (2 if _warmer.busy else 1)
        _warmer.wake.set()
        return _warmer.done.wait_for(lambda: _warmer.rounds >= target, timeout=timeout)


def warm_on_stage_change(sender, project=None, data=None, **kwargs) -> None:
    """events receiver: once a stage change commits, this process warms what it serves now."""
    # A rollback to approved is announced as "version.approved": it leaves serving too.
    if sender in ("version.stage_changed", "version.approved") and warmer_running():
        transaction.on_commit(warm_now)
