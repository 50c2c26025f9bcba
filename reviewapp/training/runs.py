"""Queueing and cancelling training runs; a worker executes them (``execution``)."""

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .. import enqueue as jobs
from ..models import Project, TrainingRun
from .config import check_trainable, train_config_for


@transaction.atomic
def training_run_create(
    *,
    project: Project,
    actor=None,
    config: dict[str, Any] | None = None,
    enqueue: bool = True,
    trigger: str = TrainingRun.Trigger.MANUAL,
    reason: str = "",
    then_audit: str = "",
    then_shadow: bool = False,
    fail_if_unqueued: bool = False,
) -> TrainingRun:
    """Queue a training run; it waits behind any run of the same project.

    ``fail_if_unqueued``: someone is waiting, so a broker that refuses the job fails the
    run and raises ``enqueue.QueueUnavailable``; otherwise the reaper sends it again.
    """
    train_config = train_config_for(project, config)
    check_trainable(project)
    run = TrainingRun.objects.create(
        project=project,
        created_by=actor,
        config=train_config.to_dict(),
        trigger=trigger,
        reason=reason[:300],
        then_audit=then_audit,
        then_shadow=then_shadow,
    )
    if enqueue and fail_if_unqueued:
        jobs.send_or_fail(
            jobs.TRAINING_RUN, run.pk, on_failure=lambda message: _fail_unqueued(run.pk, message)
        )
    elif enqueue:
        jobs.send(jobs.TRAINING_RUN, run.pk)
    return run


def _fail_unqueued(run_id: int, message: str) -> None:
    # Not announced: the person is told by the answer, and the broker is down anyway.
    TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.PENDING).update(
        status=TrainingRun.Status.FAILED,
        phase=TrainingRun.Phase.DONE,
        error_message=message,
        finished_at=timezone.now(),
    )


def training_run_cancel(*, run: TrainingRun, actor=None) -> TrainingRun:
    """Cancel a queued run at once; ask a running one to stop after its current batch."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.is_finished:
            raise ValidationError(f"Run {run.pk} has already {run.get_status_display().lower()}.")
        if run.status == TrainingRun.Status.PENDING:
            run.status = TrainingRun.Status.CANCELLED
            run.phase = TrainingRun.Phase.DONE
            run.finished_at = timezone.now()
            run.error_message = _who(actor, "Cancelled before it started")
        else:
            run.cancel_requested = True
            run.error_message = _who(actor, "Cancelled while training")
        run.save()
    return run


def _who(actor, text: str) -> str:
    return f"{text} by {actor.get_username()}." if actor else f"{text}."
