"""Jobs nobody is doing: sent again, or failed with a message a person can act on.

A job's message can be lost (a broker outage, a Redis restart without persistence) or its
worker can die. Every reaper period (``reviewapp.periodic``) a training run, label audit or
upload still pending after ``LOUPE_PENDING_TIMEOUT`` seconds is sent again (a duplicate
message is harmless: workers claim only pending rows); after ``LOUPE_PENDING_MAX_SENDS``
sends with no worker busy, or when the broker cannot be reached, it is marked failed with
the reason. So after an outage nothing stays pending beyond one reaper period past the
timeout. Staging folders that no pending upload owns are removed once they are old.
"""

import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from . import audits, enqueue, services, training
from .models import LabelAudit, TrainingRun, UploadBatch

__all__ = ["ReapReport", "pending_jobs_reap", "staging_cleanup"]

logger = logging.getLogger(__name__)


@dataclass
class ReapReport:
    resent: list[str] = field(default_factory=list)  # "run 12", "audit 3", "upload 7"
    failed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.resent or self.failed)


def _timeout() -> timedelta:
    return timedelta(seconds=settings.LOUPE_PENDING_TIMEOUT)


def _when(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")


def _resend(task: str, pk: int) -> str | None:
    """Send the job again now; the broker's error as text when it cannot be reached."""
    try:
        enqueue.send_now(task, pk)
    except Exception as exc:  # kombu, redis and socket errors alike: the reason is what counts
        return f"{type(exc).__name__}: {exc}"
    return None


def _fail_run(run: TrainingRun, message: str) -> bool:
    failed = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.PENDING).update(
        status=TrainingRun.Status.FAILED,
        phase=TrainingRun.Phase.DONE,
        error_message=message,
        finished_at=timezone.now(),
    )
    if failed:
        training.run_announce(run_id=run.pk)
    return bool(failed)


def _fail_audit(
    audit: LabelAudit, message: str, *, status: str = LabelAudit.Status.PENDING
) -> bool:
    """Fail the audit if it is still ``status``; whoever started it is told."""
    failed = LabelAudit.objects.filter(pk=audit.pk, status=status).update(
        status=LabelAudit.Status.FAILED,
        phase=LabelAudit.Phase.DONE,
        error_message=message,
        finished_at=timezone.now(),
    )
    if failed:
        audits.audit_announce(audit_id=audit.pk)
    return bool(failed)


def _workers_busy() -> bool:
    """Some training worker is making progress: a long queue, not a dead one."""
    return (
        TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING).exists()
        or LabelAudit.objects.filter(status=LabelAudit.Status.RUNNING).exists()
    )


def pending_jobs_reap(*, now: datetime | None = None) -> ReapReport:
    now = now or timezone.now()
    report = ReapReport()
    cutoff = now - _timeout()
    max_sends = settings.LOUPE_PENDING_MAX_SENDS
    busy = _workers_busy()
    stale = Q(dispatched_at__lt=cutoff) | Q(dispatched_at__isnull=True, created_at__lt=cutoff)

    runs = TrainingRun.objects.filter(stale, status=TrainingRun.Status.PENDING).defer("snapshot")
    for run in runs:
        if TrainingRun.objects.filter(
            project_id=run.project_id, status=TrainingRun.Status.RUNNING
        ).exists():
            continue  # it waits behind its project's running run, as it should
        _reap_one(
            run,
            kind="run",
            task=enqueue.TRAINING_RUN,
            give_up=run.dispatch_count >= max_sends and not busy,
            fail=_fail_run,
            what="training run",
            worker_hint="a training worker (`celery -A reviewapp worker -Q training`, or "
            "`make run`), then start the run again (Retrain)",
            now=now,
            report=report,
        )
    pending_audits = LabelAudit.objects.filter(stale, status=LabelAudit.Status.PENDING).defer(
        "snapshot"
    )
    for audit in pending_audits:
        _reap_one(
            audit,
            kind="audit",
            task=enqueue.AUDIT_START,
            give_up=audit.dispatch_count >= max_sends and not busy,
            fail=_fail_audit,
            what="label audit",
            worker_hint="a training worker (`celery -A reviewapp worker -Q training`, or "
            "`make run`), then start the audit again",
            now=now,
            report=report,
        )
    _reap_dead_audits(now, report)
    _reap_uploads(now, report)
    return report


def _reap_dead_audits(now: datetime, report: ReapReport) -> None:
    """A running audit past what its jobs' time limits allow lost its worker.

    Audits send no heartbeat: their prepare, k fold and finishing jobs each stop at the
    hard time limit, so an audit still running after (k + 2) limits cannot be alive.
    """
    limit = settings.LOUPE_TRAINING_HARD_TIME_LIMIT
    running = LabelAudit.objects.filter(status=LabelAudit.Status.RUNNING, started_at__isnull=False)
    for audit in running.only("pk", "k", "started_at", "project_id"):
        if now - audit.started_at <= timedelta(seconds=limit * (audit.k + 2)):
            continue
        message = (
            f"This audit started at {_when(audit.started_at)} and is still not finished, "
            "longer than its jobs' time limits allow: the worker running it stopped "
            "(killed, or out of memory?). Start the audit again."
        )
        if _fail_audit(audit, message, status=LabelAudit.Status.RUNNING):
            report.failed.append(f"audit {audit.pk}")


def _reap_one(job, *, kind, task, give_up, fail, what, worker_hint, now, report) -> None:
    label = f"{kind} {job.pk}"
    queued = _when(job.created_at)
    if give_up:
        message = (
            f"This {what} was queued at {queued} but no worker took it after "
            f"{job.dispatch_count + 1} sends over {_minutes(now - job.created_at)} minutes. "
            f"Start {worker_hint}."
        )
        if fail(job, message):
            report.failed.append(label)
        return
    error = _resend(task, job.pk)
    if error is not None:
        message = (
            f"This {what} was queued at {queued} but its job could not be sent again: the "
            f"task broker cannot be reached ({error}). Check REDIS_URL (or `make run`'s "
            f"embedded Redis), then start it again."
        )
        if fail(job, message):
            report.failed.append(label)
        return
    type(job).objects.filter(pk=job.pk).update(
        dispatched_at=now, dispatch_count=job.dispatch_count + 1
    )
    report.resent.append(label)
    logger.warning("Sent %s again: pending since %s", label, queued)


def _minutes(delta: timedelta) -> int:
    return max(1, round(delta.total_seconds() / 60))


def _fail_upload(batch: UploadBatch, message: str) -> bool:
    return services.upload_batch_fail(batch=batch, message=message)


def _reap_uploads(now: datetime, report: ReapReport) -> None:
    """Uploads have no send counter: their age says how many periods they were sent again."""
    timeout = _timeout()
    give_up_age = timeout * (settings.LOUPE_PENDING_MAX_SENDS + 1)
    pending = UploadBatch.objects.filter(
        status=UploadBatch.Status.PENDING, created_at__lt=now - timeout
    )
    for batch in pending:
        label = f"upload {batch.pk}"
        if now - batch.created_at > give_up_age:
            message = (
                f"This upload was staged at {_when(batch.created_at)} but no worker took it "
                f"in {_minutes(now - batch.created_at)} minutes. Start a worker "
                "(`celery -A reviewapp worker -Q default`, or `make run`) and upload again."
            )
            if _fail_upload(batch, message):
                report.failed.append(label)
            continue
        error = _resend(enqueue.UPLOAD_BATCH, batch.pk)
        if error is not None:
            message = (
                f"This upload was staged at {_when(batch.created_at)} but its job could not be "
                f"sent: the task broker cannot be reached ({error}). Upload again once it is up."
            )
            if _fail_upload(batch, message):
                report.failed.append(label)
        else:
            report.resent.append(label)
    # A running upload past its task's hard time limit lost its worker.
    limit = timedelta(seconds=settings.LOUPE_UPLOAD_TIME_LIMIT)
    dead = UploadBatch.objects.filter(status=UploadBatch.Status.RUNNING, started_at__lt=now - limit)
    for batch in dead:
        message = (
            f"The worker ingesting this upload stopped (it started at "
            f"{_when(batch.started_at)}). The images it stored are kept; upload the rest again."
        )
        if _fail_upload(batch, message):
            report.failed.append(f"upload {batch.pk}")


def staging_cleanup(*, now: float | None = None) -> list[str]:
    """Remove staging folders older than LOUPE_STAGING_MAX_AGE that no unfinished upload owns."""
    root = Path(settings.MEDIA_ROOT) / "staging"
    if not root.is_dir():
        return []
    now = now or time.time()
    max_age = settings.LOUPE_STAGING_MAX_AGE
    owned = set(
        UploadBatch.objects.filter(
            status__in=(UploadBatch.Status.PENDING, UploadBatch.Status.RUNNING)
        ).values_list("staging_dir", flat=True)
    )
    removed = []
    for folder in root.iterdir():
        relative = str(folder.relative_to(settings.MEDIA_ROOT))
        if relative in owned or not folder.is_dir():
            continue
        try:
            age = now - folder.stat().st_mtime
        except FileNotFoundError:
            continue  # removed meanwhile by the ingest that owned it
        if age > max_age:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(relative)
    return removed
