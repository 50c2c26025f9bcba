"""The one way a version's stage changes: under the project's row lock, with its
RolloutEvent and announcements, in the caller's transaction."""

from .. import events, notifications
from ..models import ModelVersion, Project, RolloutEvent
from .errors import RolloutConflict, RolloutError
from .policy import parse_rollout_steps

__all__ = [
    "IN_ROLLOUT",
    "Stage",
    "lock_version",
    "move_version",
    "next_step",
    "steps_of",
    "sync_version",
]


Stage = ModelVersion.Stage


IN_ROLLOUT = (Stage.SHADOW, Stage.LIMITED, Stage.LIVE)


def steps_of(project: Project) -> list[int]:
    try:
        return parse_rollout_steps(project.rollout_steps)
    except RolloutError:  # an invalid value saved around the form: fall back to the default
        return [5, 25, 50, 100]


def next_step(steps: list[int], share: int) -> int:
    return next((s for s in steps if s > share), 100)


def lock_version(version: ModelVersion) -> ModelVersion:
    """Lock the project (serializing its rollout) and re-read the version under the lock.

    The caller's ``version`` is what they saw; if the row moved on since, it is a conflict.
    """
    Project.objects.select_for_update().filter(pk=version.project_id).first()
    current = ModelVersion.objects.select_for_update().select_related("project").get(pk=version.pk)
    if (current.stage, current.traffic_share) != (version.stage, version.traffic_share):
        raise RolloutConflict(
            f"{current.label} changed while you were looking: it is now "
            f"{current.get_stage_display().lower()}"
            f"{f' at {current.traffic_share}%' if current.stage == Stage.LIMITED else ''}. "
            "Reload and try again."
        )
    return current


def move_version(
    version: ModelVersion,
    *,
    stage: str,
    share: int,
    actor,
    reason: str,
    paused_reason: str | None = "",
) -> RolloutEvent:
    """Set the stage and share, and write the event; ``paused_reason=None`` keeps it."""
    from_stage = version.stage
    version.stage, version.traffic_share = stage, share
    fields = ["stage", "traffic_share"]
    if paused_reason is not None:
        version.paused_reason = paused_reason
        fields.append("paused_reason")
    version.save(update_fields=fields)
    event = RolloutEvent.objects.create(
        version=version,
        from_stage=from_stage,
        to_stage=stage,
        traffic_share=share,
        actor=actor,
        reason=reason,
    )
    _announce(version, event, paused=bool(paused_reason))
    return event


def _announce(version: ModelVersion, event: RolloutEvent, *, paused: bool) -> None:
    """Webhooks hear of every move; approvers are told when a guardrail paused a rollout."""
    project = version.project
    data = {
        "version_id": version.pk,
        "version": version.number,
        "from_stage": event.from_stage,
        "to_stage": event.to_stage,
        "traffic_share": event.traffic_share,
        "actor": event.actor.get_username() if event.actor else None,
        "reason": event.reason,
    }
    link = version.get_absolute_url()
    if paused:
        events.emit(
            "guardrail.paused",
            project=project,
            data=data,
            message=f"{project.name}: {version.label} was paused at {event.traffic_share}%. "
            f"{event.reason}"[:300],
            link=link,
            users=notifications.approvers(project=project),
        )
    elif event.to_stage == Stage.APPROVED:
        events.emit(
            "version.approved",
            project=project,
            data=data,
            message=f"{project.name}: {version.label} was approved.",
            link=link,
        )
    else:
        share = f" at {event.traffic_share}%" if event.to_stage == Stage.LIMITED else ""
        events.emit(
            "version.stage_changed",
            project=project,
            data=data,
            message=f"{project.name}: {version.label} is now {event.to_stage}{share}.",
            link=link,
        )


def sync_version(target: ModelVersion, source: ModelVersion) -> ModelVersion:
    """Copy the new state onto the caller's instance, so it can go on using it."""
    target.stage, target.traffic_share = source.stage, source.traffic_share
    target.paused_reason = source.paused_reason
    return target
