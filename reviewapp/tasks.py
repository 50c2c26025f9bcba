"""Celery tasks: thin, they take ids and call a service."""

from celery import shared_task

from . import services

__all__ = ["demo_project_build", "upload_batch_process"]


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=3600, time_limit=3700)
def upload_batch_process(batch_id: int) -> None:
    services.upload_batch_run(batch_id=batch_id)


@shared_task(acks_late=True, soft_time_limit=1800, time_limit=1900)
def demo_project_build(project_id: int) -> None:
    from .demo import demo_project_fill

    demo_project_fill(project_id=project_id)
