"""Approval: what an approver sees of a version, and approving, rejecting or shadowing it."""

from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count

from .. import selectors
from ..models import ImageScore, ModelVersion
from .errors import RolloutError
from .moves import Stage, lock_version, move_version, next_step, steps_of, sync_version

__all__ = [
    "ApprovalSummary",
    "FEW_IMAGES_PER_CLASS",
    "MetricRow",
    "approval_summary",
    "next_steps",
    "version_approve",
    "version_reject",
    "version_shadow_unapproved",
]


# A class with fewer scored images than this gets a warning on the approval page.
FEW_IMAGES_PER_CLASS = 20


@dataclass
class MetricRow:
    name: str
    value: float | int | None
    live_value: float | int | None


@dataclass
class ApprovalSummary:
    version: ModelVersion
    live: ModelVersion | None
    metrics: list[MetricRow]
    classes: list  # selectors.ClassDelta, a = live, b = this version
    flagged: int
    reviewed: int
    required_coverage: float
    tolerance: float = 0.01  # the project's approval_tolerance
    warnings: list[str] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Reviewed flagged images / flagged images of this version (1 when none is flagged)."""
        return self.reviewed / self.flagged if self.flagged else 1.0

    @property
    def coverage_ok(self) -> bool:
        return self.coverage >= self.required_coverage

    @property
    def accuracy_gap(self) -> float | None:
        """How far this version's validation accuracy is below live's (negative: above)."""
        if self.live is None or None in (self.version.accuracy, self.live.accuracy):
            return None
        return self.live.accuracy - self.version.accuracy

    @property
    def accuracy_ok(self) -> bool:
        # The epsilon keeps 0.51 - 0.50 (0.0100000001 in floats) within a 0.01 tolerance.
        return self.accuracy_gap is None or self.accuracy_gap - self.tolerance <= 1e-9

    @property
    def accuracy_text(self) -> str:
        """Why approval needs a reason: "v3's accuracy is 11.5 points below live v2's ..."."""
        return (
            f"{self.version.label}'s accuracy is {100 * (self.accuracy_gap or 0):.1f} points "
            f"below live {self.live.label if self.live else ''}'s "
            f"(tolerance {100 * self.tolerance:.1f})"
        )


def _class_image_counts(version: ModelVersion) -> dict[str, int]:
    """Scored (labeled) images per class name: what the version was trained and checked on."""
    rows = (
        ImageScore.objects.filter(version=version)
        .values_list("label__name")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {name: n for name, n in rows if name is not None}


def approval_summary(*, version: ModelVersion) -> ApprovalSummary:
    """What an approver weighs: metrics against live, per-class changes, coverage, warnings."""
    project = version.project
    live = project.model_versions.filter(stage=Stage.LIVE).exclude(pk=version.pk).first()
    metrics = [
        MetricRow(name, version.metrics.get(name), live.metrics.get(name) if live else None)
        for name in ("accuracy", "error_rate", "n_train", "n_valid")
    ]
    errors = selectors.version_class_errors(version)
    live_errors = selectors.version_class_errors(live) if live else {}
    classes = [
        selectors.ClassDelta(
            name,
            live_errors.get(name, (None, 0))[0],
            errors.get(name, (None, 0))[0],
            live_errors.get(name, (None, 0))[1],
            errors.get(name, (None, 0))[1],
        )
        for name in dict.fromkeys([*version.vocab, *(live.vocab if live else [])])
    ]
    progress = selectors.review_progress(version=version, filters=selectors.ReviewFilters())
    summary = ApprovalSummary(
        version=version,
        live=live,
        metrics=metrics,
        classes=classes,
        flagged=progress.flagged,
        reviewed=progress.reviewed,
        required_coverage=project.approval_coverage,
        tolerance=project.approval_tolerance,
    )
    if not version.pretrained:
        summary.warnings.append(
            "Trained from scratch, not fine-tuned from pretrained weights: expect lower "
            "accuracy on new images."
        )
    counts = _class_image_counts(version)
    few = [f"{name} ({counts.get(name, 0)})" for name in version.vocab]
    few = [
        label
        for name, label in zip(version.vocab, few, strict=True)
        if counts.get(name, 0) < FEW_IMAGES_PER_CLASS
    ]
    if few:
        summary.warnings.append(
            f"Few images (under {FEW_IMAGES_PER_CLASS}) in class{'es' if len(few) > 1 else ''} "
            f"{', '.join(few)}: its metrics rest on little data."
        )
    if not summary.coverage_ok:
        summary.warnings.append(
            f"Low review coverage: {summary.reviewed} of {summary.flagged} flagged images "
            f"({summary.coverage:.0%}) were reviewed; approval needs "
            f"{summary.required_coverage:.0%} or a written override reason."
        )
    if not summary.accuracy_ok:
        summary.warnings.append(
            f"{summary.accuracy_text}: {version.accuracy:.1%} against {live.accuracy:.1%}. "
            "Approval needs a written reason."
        )
    elif summary.accuracy_gap is not None and summary.accuracy_gap > 0:
        summary.warnings.append(
            f"Lower validation accuracy than live {live.label}: "
            f"{version.accuracy:.1%} against {live.accuracy:.1%}, within the tolerance of "
            f"{100 * summary.tolerance:.1f} points."
        )
    return summary


def next_steps(*, version: ModelVersion, live: ModelVersion | None) -> list[tuple[str, str, int]]:
    """The stage changes offered for a version as (button text, stage, share)."""
    steps = steps_of(version.project)
    first = steps[0] if steps[0] < 100 else None
    has_live = live is not None and live.pk != version.pk
    offered = []
    if version.awaits_approval:
        return offered  # approval first, even in shadow
    if version.stage == Stage.APPROVED:
        offered.append(("Start shadow", Stage.SHADOW, 0))
    if version.stage in (Stage.APPROVED, Stage.SHADOW):
        if has_live and first:
            offered.append((f"Limited {first}%", Stage.LIMITED, first))
        if not has_live:
            offered.append(("Make live", Stage.LIVE, 100))
    if version.stage == Stage.LIMITED:
        share = next_step(steps, version.traffic_share)
        if share >= 100:
            offered.append(("Promote to live (100%)", Stage.LIVE, 100))
        else:
            offered.append((f"Expand to {share}%", Stage.LIMITED, share))
    return offered


@transaction.atomic
def version_approve(
    *,
    version: ModelVersion,
    actor,
    note: str,
    override_reason: str = "",
    accuracy_reason: str = "",
) -> ModelVersion:
    """Approve a candidate; low review coverage or accuracy below live's need a reason each."""
    note, override_reason = (note or "").strip(), (override_reason or "").strip()
    accuracy_reason = (accuracy_reason or "").strip()
    current = lock_version(version)
    if not current.awaits_approval:
        raise RolloutError(
            f"{current.label} is {current.get_stage_display().lower()}; only a candidate "
            "can be approved."
        )
    if not note:
        raise RolloutError("Write a note saying why you approve this version.")
    summary = approval_summary(version=current)
    reason, missing = note, []
    if not summary.coverage_ok:
        if not override_reason:
            missing.append(
                f"Only {summary.reviewed} of {summary.flagged} flagged images "
                f"({summary.coverage:.0%}) were reviewed, and approval needs "
                f"{summary.required_coverage:.0%}. Review more of its top losses, or give an "
                "override reason."
            )
        reason += (
            f"\nOverride (review coverage {summary.coverage:.0%} < "
            f"{summary.required_coverage:.0%}): {override_reason}"
        )
    if not summary.accuracy_ok:
        if not accuracy_reason:
            missing.append(
                f"{summary.accuracy_text}. Write why you approve it anyway (the accuracy "
                "reason), or train a better version."
            )
        reason += f"\nBelow live accuracy ({summary.accuracy_text}): {accuracy_reason}"
    if missing:
        raise RolloutError(" ".join(missing))
    move_version(current, stage=Stage.APPROVED, share=0, actor=actor, reason=reason)
    return sync_version(version, current)


@transaction.atomic
def version_shadow_unapproved(*, version: ModelVersion, reason: str) -> ModelVersion:
    """The retraining policy's shadow: a candidate answers beside live, serving nobody.

    Approval stays a person's decision: the version still awaits it, and nothing moves it
    to limited or live before.
    """
    current = lock_version(version)
    if current.stage != Stage.CANDIDATE:
        raise RolloutError(
            f"{current.label} is {current.get_stage_display().lower()}, not a candidate."
        )
    move_version(current, stage=Stage.SHADOW, share=0, actor=None, reason=reason)
    return sync_version(version, current)


@transaction.atomic
def version_reject(*, version: ModelVersion, actor, note: str) -> ModelVersion:
    """Reject a version that serves no traffic (a candidate, approved or in shadow)."""
    note = (note or "").strip()
    current = lock_version(version)
    if current.stage not in (Stage.CANDIDATE, Stage.APPROVED, Stage.SHADOW):
        raise RolloutError(
            f"{current.label} is {current.get_stage_display().lower()}: roll it back before "
            "rejecting it."
            if current.stage in (Stage.LIMITED, Stage.LIVE)
            else f"{current.label} is {current.get_stage_display().lower()} and cannot be rejected."
        )
    if not note:
        raise RolloutError("Write a note saying why you reject this version.")
    move_version(current, stage=Stage.REJECTED, share=0, actor=actor, reason=note)
    return sync_version(version, current)
