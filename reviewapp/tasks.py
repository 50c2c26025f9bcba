"""Celery tasks: thin, they take ids and call a service."""

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from . import services, training

__all__ = ["demo_project_build", "training_run_process", "upload_batch_process"]

# How long a run waits before asking again when another run of its project is training.
BUSY_RETRY_SECONDS = 15


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=3600, time_limit=3700)
def upload_batch_process(batch_id: int) -> None:
    services.upload_batch_run(batch_id=batch_id)


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
