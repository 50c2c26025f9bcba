"""Rollback: back to the version that served before, in one step."""

from dataclasses import dataclass

from django.db import transaction

from ..models import ModelVersion, Project, RolloutEvent
from .errors import RolloutConflict, RolloutError
from .moves import Stage, move_version

__all__ = ["RollbackPlan", "project_rollback", "rollback_plan"]


def _previous_live(project: Project, *, before: ModelVersion) -> ModelVersion | None:
    """The version that was live before ``before``: the last one retired from live."""
    event = (
        RolloutEvent.objects.filter(
            version__project=project,
            from_stage=Stage.LIVE,
            to_stage=Stage.RETIRED,
            version__stage=Stage.RETIRED,
        )
        .exclude(version=before)
        .select_related("version")
        .order_by("-created_at", "-id")
        .first()
    )
    return event.version if event else None


@dataclass
class RollbackPlan:
    """What a rollback will do now, in words; ``seen`` names the state it was worked out for."""

    taken: ModelVersion  # the version that leaves traffic
    restored: ModelVersion | None  # the version live again (a live rollback)
    live: ModelVersion | None  # the version live now
    summary: str

    @property
    def seen(self) -> str:
        return f"{self.taken.pk}:{self.taken.stage}:{self.live.pk if self.live else ''}"


def _rollback_plan(project: Project, *, lock: bool) -> RollbackPlan:
    in_rollout = ModelVersion.objects.filter(project=project, stage__in=(Stage.LIMITED, Stage.LIVE))
    if lock:
        in_rollout = in_rollout.select_for_update()
    by_stage = {v.stage: v for v in in_rollout}
    limited, live = by_stage.get(Stage.LIMITED), by_stage.get(Stage.LIVE)
    if limited is not None:
        then = f"{live.label} will serve 100%." if live else "no version will serve traffic."
        summary = f"{limited.label} leaves traffic and goes back to approved; {then}"
        return RollbackPlan(taken=limited, restored=None, live=live, summary=summary)
    if live is None:
        raise RolloutError("Nothing to roll back: no version of this project is live or limited.")
    previous = _previous_live(project, before=live)
    if previous is None:
        raise RolloutError(
            f"{live.label} is the first live version of this project: there is no previous "
            "live version to return to."
        )
    summary = (
        f"Roll back to {previous.label}: {previous.label} will serve 100%; {live.label} goes "
        "back to approved and serves nothing."
    )
    return RollbackPlan(taken=live, restored=previous, live=live, summary=summary)


def rollback_plan(*, project: Project) -> RollbackPlan:
    """What ``project_rollback`` would do now, for a confirmation; refusals raise."""
    return _rollback_plan(project, lock=False)


@transaction.atomic
def project_rollback(
    *, project: Project, actor, reason: str = "", seen: str | None = None
) -> list[RolloutEvent]:
    """Return all traffic to the previous live version, from a limited or a fresh live one.

    A limited version leaves traffic (back to approved) and the live version serves all;
    with none limited, the live version steps back to approved and the version live before
    it is live again. Shadow versions serve nothing and stay as they are. Given the ``seen``
    of the plan a person confirmed, a rollback that would now do something else is refused.
    """
    reason = (reason or "").strip() or "Rolled back."
    Project.objects.select_for_update().filter(pk=project.pk).first()
    plan = _rollback_plan(project, lock=True)
    if seen is not None and seen != plan.seen:
        raise RolloutConflict(
            f"Traffic changed since you looked; a rollback now would do this: {plan.summary} "
            "Confirm again if that is what you want."
        )
    taken, live, previous = plan.taken, plan.live, plan.restored
    if previous is None:
        text = f"Rollback: {taken.label} taken off traffic"
        text += f"; {live.label} serves all of it. {reason}" if live else f". {reason}"
        return [move_version(taken, stage=Stage.APPROVED, share=0, actor=actor, reason=text)]
    return [
        move_version(
            live,
            stage=Stage.APPROVED,
            share=0,
            actor=actor,
            reason=f"Rollback: {previous.label} is live again. {reason}",
        ),
        move_version(
            previous,
            stage=Stage.LIVE,
            share=100,
            actor=actor,
            reason=f"Rollback from {live.label}. {reason}",
        ),
    ]
