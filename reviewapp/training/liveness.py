"""Heartbeats of running runs, and the runs whose worker died."""

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from ..models import Project, TrainingRun
from .announce import run_announce
from .outputs import discard

logger = logging.getLogger(__name__)


class Heartbeat:
    """A thread that tells the database every few seconds that this run is alive."""

    def __init__(self, run_id: int, every: float):
        self.run_id, self.every = run_id, every
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-run-{run_id}")
        self.thread.daemon = True

    def _beat(self):
        try:
            while not self.stopped.wait(self.every):
                TrainingRun.objects.filter(pk=self.run_id).update(heartbeat_at=timezone.now())
        except Exception:  # a beat is best-effort; the main thread reports real failures
            logger.exception("Heartbeat of run %s stopped", self.run_id)
        finally:
            connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(timeout=30)


def _heartbeat_timeout() -> timedelta:
    return timedelta(seconds=settings.LOUPE_TRAINING_HEARTBEAT_TIMEOUT)


def fail_dead(runs, message: str) -> int:
    """Fail those of ``runs`` still running, remove what they made, and tell who started them."""
    now = timezone.now()
    failed = 0
    for run in runs:
        marked = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(
            status=TrainingRun.Status.FAILED,
            phase=TrainingRun.Phase.DONE,
            error_message=message,
            finished_at=now,
        )
        if marked:
            discard(run)
            run_announce(run_id=run.pk)
        failed += marked
    return failed


def training_runs_reap(*, project: Project | None = None) -> int:
    """Mark failed every running run whose worker stopped sending heartbeats."""
    stale = TrainingRun.objects.filter(
        status=TrainingRun.Status.RUNNING, heartbeat_at__lt=timezone.now() - _heartbeat_timeout()
    )
    if project is not None:
        stale = stale.filter(project=project)
    stale = list(stale.only("pk", "project_id", "heartbeat_at"))
    for run in stale:
        seen = timezone.localtime(run.heartbeat_at).strftime("%Y-%m-%d %H:%M:%S")
        fail_dead(
            [run],
            f"The worker running this training stopped (last sign of life at {seen}); it may "
            "have been killed or run out of memory. Start the run again.",
        )
    return len(stale)


def training_runs_reap_worker(*, worker: str) -> int:
    """A worker that just started runs nothing yet: its 'running' runs died with it."""
    runs = list(
        TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, worker=worker).only(
            "pk", "project_id"
        )
    )
    return fail_dead(
        runs,
        f"The worker {worker} restarted while running this training; it may have been "
        "killed or run out of memory. Start the run again.",
    )
