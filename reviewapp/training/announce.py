"""Who is told how a run ended: its starter, the project's approvers, the webhooks."""

from .. import events, notifications
from ..models import ModelVersion, TrainingRun


def run_announce(*, run_id: int) -> None:
    """Tell who started a run how it ended, approvers of a new version, and the webhooks."""
    run = (
        TrainingRun.objects.select_related("project", "created_by").defer("snapshot").get(pk=run_id)
    )
    project = run.project
    data = {
        "run_id": run.pk,
        "status": run.status,
        "trigger": run.trigger,
        "reason": run.reason,
        "error_message": run.error_message,
    }
    link = run.get_absolute_url()
    if run.status == TrainingRun.Status.SUCCEEDED:
        version = ModelVersion.objects.filter(run=run).first()
        if version is not None:
            data.update(version_id=version.pk, version=version.number, accuracy=version.accuracy)
        said = f" as {version.label}" if version is not None else ""
        if version is not None and version.accuracy is not None:
            said += f", validation accuracy {version.accuracy:.1%}"
        events.emit(
            "run.succeeded",
            project=project,
            data=data,
            message=f"{project.name}: run #{run.pk} succeeded{said}.",
            link=link,
            users=[run.created_by],
        )
        if version is not None:
            notifications.notify(
                notifications.approvers(project=project),
                kind="version.awaiting_approval",
                message=f"{project.name}: {version.label} awaits your approval.",
                link=version.get_absolute_url(),
                project=project,
            )
    elif run.status == TrainingRun.Status.FAILED:
        events.emit(
            "run.failed",
            project=project,
            data=data,
            message=f"{project.name}: run #{run.pk} failed: {run.error_message[:200]}",
            link=link,
            users=[run.created_by],
        )
