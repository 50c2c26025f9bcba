"""Approval and staged rollout of model versions: writes, reads and the guardrails.

Every stage or share change writes a ``RolloutEvent`` in the same transaction. Changes of one
project are serialized by a row lock on the project, so "at most one live and one limited
version" holds under concurrent requests (and a partial unique constraint backs it up).
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery

from . import events, notifications, selectors
from .models import ImageScore, ModelVersion, Prediction, Project, RolloutEvent

__all__ = [
    "GUARDRAIL_WINDOW",
    "MIN_GUARDRAIL_SAMPLE",
    "ApprovalSummary",
    "Guardrail",
    "GuardrailRates",
    "RollbackPlan",
    "RolloutConflict",
    "RolloutError",
    "StagePlan",
    "approval_summary",
    "guardrail_rates",
    "guardrail_status",
    "guardrail_window_start",
    "guardrails_check",
    "limited_versions_guard",
    "next_steps",
    "parse_rollout_steps",
    "project_policy_update",
    "project_rollback",
    "rollback_plan",
    "rollout_event_list",
    "rollout_event_queryset",
    "rollout_version_list",
    "stage_change_plan",
    "version_approve",
    "version_guard",
    "version_live",
    "version_limited",
    "version_reject",
    "version_stage_set",
]

Stage = ModelVersion.Stage
# A rate counts against its threshold only once it rests on this many predictions.
MIN_GUARDRAIL_SAMPLE = 20
# Guardrails judge a version's latest predictions, so a check stays cheap at any volume and
# an old incident does not pause a version forever.
GUARDRAIL_WINDOW = 1000
# A class with fewer scored images than this gets a warning on the approval page.
FEW_IMAGES_PER_CLASS = 20
IN_ROLLOUT = (Stage.SHADOW, Stage.LIMITED, Stage.LIVE)


class RolloutError(ValueError):
    """A refused approval or stage change; the message says what to do instead."""


class RolloutConflict(RolloutError):
    """The version changed after the caller last saw it (the API answers 409)."""


# Policy ----------------------------------------------------------------------------------


def parse_rollout_steps(text: str) -> list[int]:
    """``"5,25,50,100"`` -> ``[5, 25, 50, 100]``: rising whole percents that end at 100."""
    parts = [p.strip().rstrip("%") for p in (text or "").split(",") if p.strip()]
    if not parts:
        raise RolloutError("Give the rollout steps as percents separated by commas, e.g. 5,25,100.")
    try:
        steps = [int(p) for p in parts]
    except ValueError:
        raise RolloutError(
            f"Rollout steps must be whole percents separated by commas, not '{text}'."
        ) from None
    if any(s < 1 or s > 100 for s in steps):
        raise RolloutError("Each rollout step is a percent from 1 to 100.")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise RolloutError("Rollout steps must rise, e.g. 5,25,50,100.")
    if steps[-1] != 100:
        raise RolloutError("The last rollout step must be 100: that is when a version goes live.")
    return steps


POLICY_FIELDS = (
    "review_confidence",
    "approval_coverage",
    "approval_tolerance",
    "rollout_steps",
    "max_shadow_disagreement",
    "max_override_rate",
    "max_low_confidence",
)


@transaction.atomic
def project_policy_update(*, project: Project, **fields) -> Project:
    """Change a project's approval and rollout policy (thresholds and steps)."""
    from .services import project_update

    unknown = set(fields) - set(POLICY_FIELDS)
    if unknown:
        raise RolloutError(f"Not a rollout policy setting: {', '.join(sorted(unknown))}.")
    if "rollout_steps" in fields:
        fields["rollout_steps"] = ",".join(map(str, parse_rollout_steps(fields["rollout_steps"])))
    return project_update(project=project, **fields)


# Reads -----------------------------------------------------------------------------------


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


@dataclass
class GuardrailRates:
    """How a version's served (or shadowed) predictions went; a rate is None without data."""

    n_predictions: int = 0
    n_low_confidence: int = 0
    n_compared: int = 0  # requests the live version also answered
    n_disagreements: int = 0
    n_reviewed: int = 0
    n_corrected: int = 0

    @staticmethod
    def _rate(part: int, whole: int) -> float | None:
        return part / whole if whole else None

    @property
    def shadow_disagreement(self) -> float | None:
        return self._rate(self.n_disagreements, self.n_compared)

    @property
    def override_rate(self) -> float | None:
        return self._rate(self.n_corrected, self.n_reviewed)

    @property
    def low_confidence_rate(self) -> float | None:
        return self._rate(self.n_low_confidence, self.n_predictions)


def guardrail_rates(*, version: ModelVersion, since: datetime | None = None) -> GuardrailRates:
    """Disagreement with live, reviewer override and low-confidence rates of a version.

    Disagreement compares the version's answer to each request with the answer of the
    version that was live when the request came (same ``request_id``).
    """
    project = version.project
    qs = Prediction.objects.filter(version=version)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    counts = qs.aggregate(
        n=Count("id"),
        low=Count("id", filter=Q(confidence__lt=project.review_confidence)),
        reviewed=Count("id", filter=~Q(review="")),
        corrected=Count("id", filter=Q(review=Prediction.Review.CORRECTED)),
    )
    rates = GuardrailRates(
        n_predictions=counts["n"],
        n_low_confidence=counts["low"],
        n_reviewed=counts["reviewed"],
        n_corrected=counts["corrected"],
    )
    if version.stage != Stage.LIVE:
        live_answer = (
            Prediction.objects.filter(request_id=OuterRef("request_id"), stage=Stage.LIVE)
            .exclude(version_id=version.pk)
            .values("label")[:1]
        )
        compared = qs.annotate(live_label=Subquery(live_answer)).filter(live_label__isnull=False)
        both = compared.aggregate(
            n=Count("id"), differ=Count("id", filter=~Q(label=F("live_label")))
        )
        rates.n_compared, rates.n_disagreements = both["n"], both["differ"]
    return rates


@dataclass
class Guardrail:
    """One guardrail of a version: its rate against the project's threshold."""

    name: str  # shadow_disagreement, override_rate, low_confidence_rate
    label: str
    rate: float | None
    threshold: float
    sample: int  # the rate's denominator
    min_sample: int = MIN_GUARDRAIL_SAMPLE

    @property
    def counted(self) -> bool:
        return self.rate is not None and self.sample >= self.min_sample

    @property
    def exceeded(self) -> bool:
        return self.counted and self.rate > self.threshold

    @property
    def reason(self) -> str:
        if self.rate is None:
            return f"{self.label}: no data yet."
        shown = f"{self.label} {self.rate:.0%} (threshold {self.threshold:.0%}, n={self.sample})"
        if not self.counted:
            return f"{shown}: not counted below {self.min_sample} predictions."
        return f"{shown}: exceeded." if self.exceeded else f"{shown}: within the threshold."


def guardrail_window_start(*, version: ModelVersion) -> datetime | None:
    """When the version's latest ``GUARDRAIL_WINDOW`` predictions begin; None: fewer exist."""
    return (
        Prediction.objects.filter(version=version)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[GUARDRAIL_WINDOW - 1 : GUARDRAIL_WINDOW]
        .first()
    )


def guardrail_status(*, version: ModelVersion, rates: GuardrailRates | None = None) -> list:
    """Every guardrail of the version over its latest predictions, exceeded or not."""
    if rates is None:
        since = guardrail_window_start(version=version)
        rates = guardrail_rates(version=version, since=since)
    project = version.project
    return [
        Guardrail(
            "shadow_disagreement",
            "Disagreement with live",
            rates.shadow_disagreement,
            project.max_shadow_disagreement,
            rates.n_compared,
        ),
        Guardrail(
            "override_rate",
            "Reviewer override rate",
            rates.override_rate,
            project.max_override_rate,
            rates.n_reviewed,
        ),
        Guardrail(
            "low_confidence_rate",
            "Low-confidence rate",
            rates.low_confidence_rate,
            project.max_low_confidence,
            rates.n_predictions,
        ),
    ]


def guardrails_check(*, version: ModelVersion) -> list[Guardrail]:
    """The guardrails the version exceeds; each has a ``reason`` a person can read."""
    return [g for g in guardrail_status(version=version) if g.exceeded]


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
    steps = _steps_of(version.project)
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
        share = _next_step(steps, version.traffic_share)
        if share >= 100:
            offered.append(("Promote to live (100%)", Stage.LIVE, 100))
        else:
            offered.append((f"Expand to {share}%", Stage.LIMITED, share))
    return offered


# Writes ----------------------------------------------------------------------------------


def _steps_of(project: Project) -> list[int]:
    try:
        return parse_rollout_steps(project.rollout_steps)
    except RolloutError:  # an invalid value saved around the form: fall back to the default
        return [5, 25, 50, 100]


def _next_step(steps: list[int], share: int) -> int:
    return next((s for s in steps if s > share), 100)


def _lock(version: ModelVersion) -> ModelVersion:
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


def _move(
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


def _sync(target: ModelVersion, source: ModelVersion) -> ModelVersion:
    """Copy the new state onto the caller's instance, so it can go on using it."""
    target.stage, target.traffic_share = source.stage, source.traffic_share
    target.paused_reason = source.paused_reason
    return target


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
    current = _lock(version)
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
    _move(current, stage=Stage.APPROVED, share=0, actor=actor, reason=reason)
    return _sync(version, current)


@transaction.atomic
def version_shadow_unapproved(*, version: ModelVersion, reason: str) -> ModelVersion:
    """The retraining policy's shadow: a candidate answers beside live, serving nobody.

    Approval stays a person's decision: the version still awaits it, and nothing moves it
    to limited or live before.
    """
    current = _lock(version)
    if current.stage != Stage.CANDIDATE:
        raise RolloutError(
            f"{current.label} is {current.get_stage_display().lower()}, not a candidate."
        )
    _move(current, stage=Stage.SHADOW, share=0, actor=None, reason=reason)
    return _sync(version, current)


@transaction.atomic
def version_reject(*, version: ModelVersion, actor, note: str) -> ModelVersion:
    """Reject a version that serves no traffic (a candidate, approved or in shadow)."""
    note = (note or "").strip()
    current = _lock(version)
    if current.stage not in (Stage.CANDIDATE, Stage.APPROVED, Stage.SHADOW):
        raise RolloutError(
            f"{current.label} is {current.get_stage_display().lower()}: roll it back before "
            "rejecting it."
            if current.stage in (Stage.LIMITED, Stage.LIVE)
            else f"{current.label} is {current.get_stage_display().lower()} and cannot be rejected."
        )
    if not note:
        raise RolloutError("Write a note saying why you reject this version.")
    _move(current, stage=Stage.REJECTED, share=0, actor=actor, reason=note)
    return _sync(version, current)


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
        _move(
            old,
            stage=Stage.RETIRED,
            share=0,
            actor=actor,
            reason=f"Replaced by {version.label}.",
        )
    _move(version, stage=Stage.LIVE, share=100, actor=actor, reason=reason)


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
    steps = _steps_of(project)
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
        new_share = share if share is not None else _next_step(steps, current.traffic_share)
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
    current = _lock(version)
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
        _move(
            current,
            stage=Stage.LIMITED,
            share=plan.share,
            actor=actor,
            reason=reason,
            paused_reason=paused,
        )
    else:
        _move(current, stage=plan.stage, share=plan.share, actor=actor, reason=reason)
    return _sync(version, current)


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
        return [_move(taken, stage=Stage.APPROVED, share=0, actor=actor, reason=text)]
    return [
        _move(
            live,
            stage=Stage.APPROVED,
            share=0,
            actor=actor,
            reason=f"Rollback: {previous.label} is live again. {reason}",
        ),
        _move(
            previous,
            stage=Stage.LIVE,
            share=100,
            actor=actor,
            reason=f"Rollback from {live.label}. {reason}",
        ),
    ]


@transaction.atomic
def version_guard(*, version: ModelVersion) -> list[Guardrail]:
    """Pause a limited version that exceeds a guardrail; returns the exceeded guardrails.

    Call it after storing predictions. Pausing keeps the share (the router sends a paused
    version nothing) and writes an event with no actor. A version that is not limited, or is
    paused already, costs one query and returns ``[]``.
    """
    unpaused_limited = ModelVersion.objects.filter(
        pk=version.pk, stage=Stage.LIMITED, paused_reason=""
    )
    if not unpaused_limited.exists():
        return []
    Project.objects.select_for_update().filter(pk=version.project_id).first()
    current = ModelVersion.objects.select_for_update().select_related("project").get(pk=version.pk)
    exceeded = guardrails_check(version=current) if current.stage == Stage.LIMITED else []
    if exceeded and not current.paused_reason:
        reason = "Paused by a guardrail: " + " ".join(g.reason for g in exceeded)
        _move(
            current,
            stage=Stage.LIMITED,
            share=current.traffic_share,
            actor=None,
            reason=reason,
            paused_reason=reason,
        )
        _sync(version, current)
    return exceeded


def limited_versions_guard() -> list[ModelVersion]:
    """Check every unpaused limited version; returns the ones it paused."""
    paused = []
    for version in ModelVersion.objects.filter(stage=Stage.LIMITED, paused_reason=""):
        if version_guard(version=version):
            paused.append(version)
    return paused
