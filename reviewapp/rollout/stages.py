"""Stage changes an approver asks for (shadow, limited steps, live, retired): the plan
shown before, the guarded move after, and the rollout timeline."""

from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet

from ..models import ModelVersion, Project, RolloutEvent
from .errors import RolloutError
from .guardrails import guardrails_check
from .moves import IN_ROLLOUT, Stage, lock_version, move_version, next_step, steps_of, sync_version

__all__ = [
    "StagePlan",
    "rollout_event_list",
    "rollout_event_queryset",
    "rollout_version_list",
    "stage_change_plan",
    "version_limited",
    "version_live",
    "version_stage_set",
]


def rollout_event_queryset(*, version: ModelVersion) -> QuerySet[RolloutEvent]:
    """The version's timeline, oldest first."""
    return version.rollout_events.select_related("actor").order_by("created_at", "id")


def rollout_event_list(*, version: ModelVersion) -> list[RolloutEvent]:
    return list(rollout_event_queryset(version=version))


def rollout_version_list(*, project: Project) -> QuerySet[ModelVersion]:
    """The project's versions, newest first."""
    return project.model_versions.order_by("-number")


def version_live(*, project: Project) -> ModelVersion | None:
    return project.model_versions.filter(stage=Stage.LIVE).first()


def version_limited(*, project: Project) -> ModelVersion | None:
    return project.model_versions.filter(stage=Stage.LIMITED).first()


def _refuse_if_guarded(version: ModelVersion, share: int) -> None:
    exceeded = guardrails_check(version=version)
    if exceeded:
        reasons = " ".join(g.reason for g in exceeded)
        raise RolloutError(
            f"Expansion of {version.label} to {share}% refused: {reasons} Roll it back, or "
            "change the thresholds in the rollout policy if they are too strict."
        )


def _promote(version: ModelVersion, *, actor, reason: str) -> None:
    """Make ``version`` live; the live version before it is retired first."""
    project = version.project
    old = (
        ModelVersion.objects.select_for_update()
        .filter(project=project, stage=Stage.LIVE)
        .exclude(pk=version.pk)
        .first()
    )
    if old is not None:
        move_version(
            old,
            stage=Stage.RETIRED,
            share=0,
            actor=actor,
            reason=f"Replaced by {version.label}.",
        )
    move_version(version, stage=Stage.LIVE, share=100, actor=actor, reason=reason)


@dataclass
class StagePlan:
    """What a stage change will do, worked out from the current state, in words."""

    version: ModelVersion
    stage: str  # shadow, limited or live (limited at 100% is live)
    share: int
    live: ModelVersion | None  # the version live now, other than this one
    skipped: list[str]  # the rungs of shadow -> limited steps -> live it jumps over
    summary: str  # "v3 will serve 25% of traffic (limited); v2 keeps 75%."

    @property
    def needs_reason(self) -> bool:
        return bool(self.skipped)

    @property
    def skipped_text(self) -> str:
        """The skipped rungs in words: "shadow and the limited steps 5% and 25%"."""
        shares = [s.removeprefix("limited ") for s in self.skipped if s.startswith("limited")]
        parts = ["shadow"] if "shadow" in self.skipped else []
        if shares:
            if len(shares) == 1:
                parts.append(f"limited {shares[0]}")
            else:
                parts.append(f"the limited steps {', '.join(shares[:-1])} and {shares[-1]}")
        return " and ".join(parts)

    @property
    def title(self) -> str:
        label = self.version.label
        if self.stage == Stage.SHADOW:
            return f"Start {label} in shadow?"
        if self.stage == Stage.LIVE:
            return f"Make {label} live?"
        return f"Send {self.share}% of traffic to {label}?"


def _rung(stage: str, share: int) -> tuple[int, int]:
    """A state's place on the ladder approved < shadow < limited (by share) < live."""
    return {Stage.APPROVED: 0, Stage.SHADOW: 1, Stage.LIMITED: 2, Stage.LIVE: 3}[stage], share


def _skipped(current: ModelVersion, stage: str, share: int, steps: list[int], live) -> list[str]:
    # With no live version there is nothing to shadow or share traffic with: none is skipped.
    if live is None:
        return []
    ladder = [(Stage.SHADOW, 0), *((Stage.LIMITED, s) for s in steps if s < 100)]
    low, high = _rung(current.stage, current.traffic_share), _rung(stage, share)
    return [
        "shadow" if rung == Stage.SHADOW else f"limited {s}%"
        for rung, s in ladder
        if low < _rung(rung, s) < high
    ]


def _stage_summary(current: ModelVersion, stage: str, share: int, live) -> str:
    label = current.label
    if stage == Stage.SHADOW:
        if live is None:
            return f"{label} will run in shadow; no version is live, so it sees no requests yet."
        return (
            f"{label} will answer a copy of every request unseen (shadow); traffic does not "
            f"change: {live.label} keeps serving it."
        )
    if stage == Stage.LIMITED:
        text = (
            f"{label} will serve {share}% of traffic (limited); {live.label} keeps {100 - share}%."
        )
        if current.paused_reason and share > current.traffic_share:
            text += f" The pause of {label} ends."
        elif current.paused_reason:
            text += f" {label} stays paused (it serves nothing until it is expanded)."
        return text
    if live is None:
        return f"{label} will serve 100% of traffic; no version serves traffic now."
    return f"{label} will serve 100% of traffic; {live.label} will be retired."


def _stage_plan(current: ModelVersion, *, stage: str, share: int | None) -> StagePlan:
    """Check a stage change against the rules and say what it will do; refusals raise."""
    project = current.project
    steps = steps_of(project)
    if stage not in IN_ROLLOUT:
        raise RolloutError(f"Unknown stage '{stage}': choose shadow, limited or live.")
    if share is not None and not 0 <= share <= 100:
        raise RolloutError("A traffic share is a percent from 1 to 100.")
    if current.stage in (Stage.CANDIDATE, Stage.REJECTED, Stage.RETIRED):
        what = {
            Stage.CANDIDATE: "is not approved yet: approve it first",
            Stage.REJECTED: "was rejected",
            Stage.RETIRED: "is retired; only a rollback brings a retired version back",
        }[current.stage]
        raise RolloutError(f"{current.label} {what}.")
    if current.awaits_approval:
        raise RolloutError(f"{current.label} is not approved yet: approve it first.")
    live = (
        ModelVersion.objects.filter(project=project, stage=Stage.LIVE)
        .exclude(pk=current.pk)
        .first()
    )
    other = (
        ModelVersion.objects.filter(project=project, stage=Stage.LIMITED)
        .exclude(pk=current.pk)
        .first()
    )
    if stage == Stage.LIMITED and share == 100:
        stage = Stage.LIVE

    if stage == Stage.SHADOW:
        if current.stage != Stage.APPROVED:
            raise RolloutError(
                f"{current.label} is {current.get_stage_display().lower()}; only an approved "
                "version starts in shadow (use rollback to take traffic away)."
            )
        new_share = 0
    elif stage == Stage.LIMITED and current.stage == Stage.LIVE:
        raise RolloutError(f"{current.label} is already live.")
    elif stage == Stage.LIMITED and current.stage in (Stage.APPROVED, Stage.SHADOW):
        if live is None:
            raise RolloutError(
                f"There is no live version to share traffic with: make {current.label} "
                "live directly."
            )
        if other is not None:
            raise RolloutError(
                f"{other.label} is already limited at {other.traffic_share}%: promote it "
                "or roll it back first. Only one version serves limited traffic."
            )
        new_share = share if share is not None else steps[0]
        if not 1 <= new_share <= 99:
            raise RolloutError("A limited version serves 1 to 99% of traffic; 100% makes it live.")
    elif stage == Stage.LIMITED:
        # Already limited: expand (or, given a lower share, shrink) its share.
        new_share = share if share is not None else next_step(steps, current.traffic_share)
        if new_share == current.traffic_share:
            raise RolloutError(f"{current.label} already serves {new_share}%.")
        if new_share < 1:
            raise RolloutError("A limited version serves at least 1%; roll it back instead.")
        if new_share > current.traffic_share:
            _refuse_if_guarded(current, new_share)
        if new_share >= 100:
            stage, new_share = Stage.LIVE, 100
    else:  # live
        if current.stage == Stage.LIVE:
            raise RolloutError(f"{current.label} is already live.")
        if current.stage == Stage.LIMITED:
            _refuse_if_guarded(current, 100)
        elif other is not None:
            raise RolloutError(
                f"{other.label} is limited at {other.traffic_share}%: promote it or roll it "
                f"back before {current.label} goes live."
            )
        new_share = 100
    return StagePlan(
        version=current,
        stage=stage,
        share=new_share,
        live=live,
        skipped=_skipped(current, stage, new_share, steps, live),
        summary=_stage_summary(current, stage, new_share, live),
    )


def stage_change_plan(*, version: ModelVersion, stage: str, share: int | None = None) -> StagePlan:
    """What ``version_stage_set`` would do now, for a confirmation; refusals raise."""
    return _stage_plan(version, stage=stage, share=share)


@transaction.atomic
def version_stage_set(
    *, version: ModelVersion, stage: str, share: int | None = None, actor, reason: str = ""
) -> ModelVersion:
    """Move a version along shadow -> limited (rising shares) -> live.

    ``limited`` from approved or shadow starts at the first rollout step (or ``share``);
    ``limited`` again expands to the next step (or ``share``); 100 or ``live`` promotes it,
    retiring the previous live version. Expansion is refused while a guardrail is exceeded,
    and a move past the next rung while a version is live (skipping shadow or a limited
    step) needs a ``reason``, which the timeline keeps.
    """
    reason = (reason or "").strip()
    current = lock_version(version)
    plan = _stage_plan(current, stage=stage, share=share)
    if plan.needs_reason:
        if not reason:
            raise RolloutError(
                f"Moving {current.label} to {plan.stage}"
                f"{f' at {plan.share}%' if plan.stage == Stage.LIMITED else ''} skips "
                f"{plan.skipped_text}. Write a reason for skipping; it goes on the timeline."
            )
        reason = f"Skipped {plan.skipped_text}: {reason}"
    if plan.stage == Stage.LIVE:
        _promote(current, actor=actor, reason=reason)
    elif plan.stage == Stage.LIMITED and current.stage == Stage.LIMITED:
        # An allowed expansion resumes a paused version; a shrink keeps the pause.
        paused = "" if plan.share > current.traffic_share else None
        move_version(
            current,
            stage=Stage.LIMITED,
            share=plan.share,
            actor=actor,
            reason=reason,
            paused_reason=paused,
        )
    else:
        move_version(current, stage=plan.stage, share=plan.share, actor=actor, reason=reason)
    return sync_version(version, current)
