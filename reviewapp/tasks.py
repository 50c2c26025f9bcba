"""Celery tasks: thin, they take ids and call a service."""

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from . import services, training

__all__ = [
    "demo_project_build",
    "suggestions_refresh_process",
    "training_run_process",
    "upload_batch_process",
    "periodic_guardrails",
    "periodic_policy_check",
    "periodic_reap",
    "periodic_staging_cleanup",
    "webhook_deliver",
    "weights_fetch_process",
]

# How long a run waits before asking again when another run of its project is training.
BUSY_RETRY_SECONDS = 15


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=3600, time_limit=3700)
def upload_batch_process(batch_id: int) -> None:
    services.upload_batch_run(batch_id=batch_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=3600, time_limit=3700)
def weights_fetch_process(fetch_id: int) -> None:
    from .backbones import weights_fetch_execute

    weights_fetch_execute(fetch_id=fetch_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=3600, time_limit=3700)
def suggestions_refresh_process(project_id: int) -> None:
    """Suggest labels for images that arrived after the latest version was trained."""
    from .labeling import suggestions_refresh

    suggestions_refresh(project_id=project_id)


@shared_task(acks_late=True, soft_time_limit=300, time_limit=330)
def webhook_deliver(delivery_id: int) -> None:
    """One attempt to deliver a webhook; a failed one queues its own retry, with backoff."""
    from .webhooks import delivery_send

    delivery_send(delivery_id=delivery_id)


@shared_task(acks_late=True, soft_time_limit=1800, time_limit=1900)
def demo_project_build(project_id: int) -> None:
    from .demo import demo_project_fill

    demo_project_fill(project_id=project_id)


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.LOUPE_TRAINING_SOFT_TIME_LIMIT,
    time_limit=settings.LOUPE_TRAINING_HARD_TIME_LIMIT,
    max_retries=None,
)
def training_run_process(self, run_id: int) -> str:
    """Run one training run on the ``training`` queue; a second run of a project waits."""
    outcome = training.training_run_execute(
        run_id=run_id,
        worker=self.request.hostname or "worker",
        redelivered=bool((self.request.delivery_info or {}).get("redelivered")),
    )
    if outcome == training.RunOutcome.BUSY:
        raise self.retry(countdown=BUSY_RETRY_SECONDS)
    return outcome


@worker_ready.connect
def _reap_runs_of_restarted_worker(sender, **kwargs) -> None:
    """Runs this worker was running before it restarted cannot still be running."""
    training.training_runs_reap_worker(worker=sender.hostname)


# Label audits: one job prepares, then k fold jobs (a group, so several workers can take
# them), and the job that completes the last fold queues the finishing job. All three are
# routed to the training queue (CELERY_TASK_ROUTES).
_AUDIT_LIMITS = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "soft_time_limit": settings.LOUPE_TRAINING_SOFT_TIME_LIMIT,
    "time_limit": settings.LOUPE_TRAINING_HARD_TIME_LIMIT,
}


@shared_task(bind=True, **_AUDIT_LIMITS)
def label_audit_start(self, audit_id: int) -> str:
    from celery import group

    from . import audits
    from .models import LabelAudit

    outcome = audits.label_audit_prepare(
        audit_id=audit_id,
        redelivered=bool((self.request.delivery_info or {}).get("redelivered")),
    )
    audit = LabelAudit.objects.filter(pk=audit_id).only("k", "status", "phase").first()
    if audit and audit.status == LabelAudit.Status.RUNNING and audit.phase == "folds":
        group(label_audit_fold.s(audit_id, fold) for fold in range(audit.k)).apply_async()
    return outcome


@shared_task(**_AUDIT_LIMITS)
def label_audit_fold(audit_id: int, fold: int) -> str:
    from . import audits

    outcome = audits.label_audit_execute_fold(audit_id=audit_id, fold=fold)
    if outcome == audits.AuditOutcome.LAST:
        label_audit_complete.delay(audit_id)
    return outcome


@shared_task(**_AUDIT_LIMITS)
def label_audit_complete(audit_id: int) -> str:
    from . import audits

    return audits.label_audit_finish(audit_id=audit_id)


# Periodic jobs: Celery beat sends them (schedules in the database, reviewapp.periodic).


@shared_task(soft_time_limit=300, time_limit=330)
def periodic_policy_check() -> int:
    from .policy import policy_check

    return len(policy_check())


@shared_task(soft_time_limit=300, time_limit=330)
def periodic_guardrails() -> int:
    from .rollout import limited_versions_guard

    return len(limited_versions_guard())


@shared_task(soft_time_limit=300, time_limit=330)
def periodic_reap() -> int:
    from .reaper import pending_jobs_reap

    training.training_runs_reap()
    report = pending_jobs_reap()
    return len(report.resent) + len(report.failed)


@shared_task(soft_time_limit=300, time_limit=330)
def periodic_staging_cleanup() -> int:
    from .reaper import staging_cleanup

    return len(staging_cleanup())
