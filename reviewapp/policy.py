"""The retraining policy: retrain a project by itself once enough has been reviewed or labeled.

A project's policy (off while both thresholds are empty) counts, since the data snapshot of
its latest version (when that version's run began), the standing review decisions and the
newly labeled images (uploads and imports with a label, and labels given in the Label
queue). When either reaches its threshold, no run of the project is queued or running, and
the last run began at least ``retrain_min_hours`` ago, it queues a run with the settings of
the last successful run. After such a run succeeds it can audit the labels and put the new
version into shadow when it beats the live one; approval and traffic stay human decisions.
"""

import logging
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import audits, events, notifications, rollout, training
from .models import ImageScore, LabelAudit, LabelEvent, ModelVersion, Project, TrainingRun

__all__ = [
    "PolicyStatus",
    "inline_followups",
    "policy_check",
    "policy_followups",
    "policy_status",
    "policy_update",
]

logger = logging.getLogger(__name__)

Action = LabelEvent.Action
REVIEW_ACTIONS = (Action.RELABEL, Action.CONFIRM, Action.DELETE, Action.RESTORE)
POLICY_FIELDS = (
    "retrain_after_decisions",
    "retrain_after_images",
    "retrain_min_hours",
    "retrain_audit",
    "retrain_shadow",
)
BUSY = (TrainingRun.Status.PENDING, TrainingRun.Status.RUNNING)

# Set by ``inline_followups``: the audits a policy run starts are then run by the caller
# (``loupe_tick --run``) instead of queued for a worker.
_inline_audits: ContextVar[list[int] | None] = ContextVar("inline_audits", default=None)


# Settings ----------------------------------------------------------------------------


@transaction.atomic
def policy_update(*, project: Project, **fields) -> Project:
    """Change the policy fields; negative or unknown values are refused with the field named."""
    unknown = set(fields) - set(POLICY_FIELDS)
    if unknown:
        raise ValidationError(f"Not policy fields: {', '.join(sorted(unknown))}.")
    errors = {}
    for name in ("retrain_after_decisions", "retrain_after_images"):
        if name in fields:
            value = fields[name]
            if value in ("", None):
                fields[name] = None
            elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
                errors[name] = "A whole number of at least 1, or empty for no threshold."
    if "retrain_min_hours" in fields:
        value = fields["retrain_min_hours"]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 24 * 365:
            errors["retrain_min_hours"] = "Hours between policy runs: a whole number, 0 or more."
    if "retrain_audit" in fields and fields["retrain_audit"] not in ("", "fast", "full"):
        errors["retrain_audit"] = "One of '' (no audit), 'fast' or 'full'."
    if "retrain_shadow" in fields and not isinstance(fields["retrain_shadow"], bool):
        errors["retrain_shadow"] = "True or false."
    if errors:
        raise ValidationError(errors)
    for name, value in fields.items():
        setattr(project, name, value)
    project.save(update_fields=list(fields))
    return project


# What has accumulated ----------------------------------------------------------------


def _counted(events_qs, condition: Q) -> Subquery:
    return Coalesce(
        Subquery(
            events_qs.filter(condition)
            .order_by()
            .values("project")
            .annotate(n=Count("pk"))
            .values("n")
        ),
        0,
    )


def _annotated(projects):
    """Projects with what the policy needs, counted in the database in one query."""
    latest = ModelVersion.objects.filter(project=OuterRef("pk")).order_by("-number")
    projects = projects.annotate(
        since=Subquery(latest.values("run__started_at")[:1]),
        since_number=Subquery(latest.values("number")[:1]),
    )
    standing = LabelEvent.objects.filter(
        project=OuterRef("pk"), created_at__gte=OuterRef("since"), undone_by__isnull=True
    )
    return projects.annotate(
        n_decisions=_counted(standing, Q(action__in=REVIEW_ACTIONS)),
        n_images=_counted(
            standing, Q(action=Action.LABEL) | Q(action=Action.IMPORT, to_category__isnull=False)
        ),
        busy=Exists(TrainingRun.objects.filter(project=OuterRef("pk"), status__in=BUSY)),
        last_run_at=Subquery(
            TrainingRun.objects.filter(project=OuterRef("pk"))
            .order_by("-created_at")
            .values("created_at")[:1]
        ),
        has_success=Exists(
            TrainingRun.objects.filter(project=OuterRef("pk"), status=TrainingRun.Status.SUCCEEDED)
        ),
    )


@dataclass
class PolicyStatus:
    """Where a project's policy stands: what the Settings page shows and the check decides on."""

    on: bool
    decisions: int
    images: int
    since_version: int | None
    busy: bool
    wait_until: datetime | None  # the interval's end, when it holds the next run back
    has_success: bool
    reason: str = ""  # why a run is due ("" when none is): the first threshold reached


def _status_of(project: Project, now: datetime) -> PolicyStatus:
    wait_until = None
    if project.last_run_at is not None:
        end = project.last_run_at + timedelta(hours=project.retrain_min_hours)
        wait_until = end if end > now else None
    status = PolicyStatus(
        on=project.retrain_policy_on,
        decisions=project.n_decisions,
        images=project.n_images,
        since_version=project.since_number,
        busy=project.busy,
        wait_until=wait_until,
        has_success=project.has_success,
    )
    if not status.on or project.since is None or not status.has_success:
        return status
    since = f"v{project.since_number}"
    if project.retrain_after_decisions and status.decisions >= project.retrain_after_decisions:
        status.reason = f"policy: {status.decisions} review decisions since {since}"
    elif project.retrain_after_images and status.images >= project.retrain_after_images:
        status.reason = f"policy: {status.images} newly labeled images since {since}"
    return status


def policy_status(*, project: Project, now: datetime | None = None) -> PolicyStatus:
    now = now or timezone.now()
    annotated = _annotated(Project.objects.filter(pk=project.pk)).get()
    return _status_of(annotated, now)


# The periodic check ------------------------------------------------------------------


def policy_check(*, now: datetime | None = None, enqueue: bool = True) -> list[TrainingRun]:
    """Start a run for every project whose policy is due; returns the runs started.

    Safe to run twice at once (two beat processes by mistake): each start re-checks under
    the project's row lock, and a run queued meanwhile makes the project busy.
    """
    now = now or timezone.now()
    enabled = Project.objects.filter(
        Q(retrain_after_decisions__isnull=False) | Q(retrain_after_images__isnull=False)
    )
    candidates = _annotated(enabled).filter(busy=False, has_success=True, since__isnull=False)
    due = [
        p.pk
        for p in candidates.filter(
            Q(retrain_after_decisions__isnull=False, n_decisions__gte=F("retrain_after_decisions"))
            | Q(retrain_after_images__isnull=False, n_images__gte=F("retrain_after_images"))
        )
        if _status_of(p, now).wait_until is None
    ]
    started = []
    for pk in due:
        try:
            run = _start(pk, now, enqueue=enqueue)
        except ValidationError as exc:
            logger.warning("Retraining policy of project %s could not start a run: %s", pk, exc)
            continue
        if run is not None:
            started.append(run)
    return started


@transaction.atomic
def _start(project_pk: int, now: datetime, *, enqueue: bool) -> TrainingRun | None:
    project = Project.objects.select_for_update().get(pk=project_pk)
    status = policy_status(project=project, now=now)
    if status.busy or status.wait_until is not None or not status.reason:
        return None
    run = training.training_run_create(
        project=project,
        config=training.last_successful_config(project),
        enqueue=enqueue,
        trigger=TrainingRun.Trigger.POLICY,
        reason=status.reason,
        then_audit=project.retrain_audit,
        then_shadow=project.retrain_shadow,
    )
    events.emit(
        "policy.triggered",
        project=project,
        data={
            "run_id": run.pk,
            "reason": run.reason,
            "decisions": status.decisions,
            "images": status.images,
            "since_version": status.since_version,
        },
        message=f"{project.name}: the retraining policy started run #{run.pk} ({run.reason}).",
        link=run.get_absolute_url(),
        users=notifications.approvers(project=project),
    )
    return run


# After a policy run ------------------------------------------------------------------


class inline_followups:
    """Within it, audits that policy runs start are collected (``.audits``), not queued."""

    def __enter__(self):
        self.audits: list[int] = []
        self._token = _inline_audits.set(self.audits)
        return self

    def __exit__(self, *exc):
        _inline_audits.reset(self._token)
        return False


def policy_followups(sender, *, project, data, **kwargs) -> None:
    """events.emitted receiver: a succeeded policy run's audit and shadow."""
    if sender != "run.succeeded" or data.get("trigger") != TrainingRun.Trigger.POLICY:
        return
    run = TrainingRun.objects.defer("snapshot").get(pk=data["run_id"])
    version = ModelVersion.objects.filter(run=run).first()
    if version is None:
        return
    if run.then_audit:
        inline = _inline_audits.get()
        try:
            audit = audits.label_audit_create(
                project=project,
                mode=run.then_audit,
                k=LabelAudit._meta.get_field("k").default,
                version=version,
                enqueue=inline is None,
                reason=f"policy: after run #{run.pk}",
            )
        except ValidationError as exc:
            logger.warning("Policy audit after run %s not started: %s", run.pk, exc)
        else:
            if inline is not None:
                inline.append(audit.pk)
    if run.then_shadow:
        try:
            _shadow_if_better(version)
        except rollout.RolloutError as exc:  # e.g. approved or rejected meanwhile
            logger.warning("Policy shadow of %s not done: %s", version, exc)


def _accuracy_on(version: ModelVersion, image_ids) -> float | None:
    scores = ImageScore.objects.filter(version=version, image_id__in=image_ids)
    total = scores.count()
    if not total:
        return None
    right = scores.filter(predicted_id=F("image__label_id")).count()
    return right / total


def _shadow_if_better(version: ModelVersion) -> bool:
    """Shadow the new version when it beats live on the validation images both scored."""
    live = rollout.version_live(project=version.project)
    if live is None:
        return False
    common = ImageScore.objects.filter(
        version=version, split="valid", image__label__isnull=False
    ).filter(image_id__in=ImageScore.objects.filter(version=live).values("image_id"))
    ids = list(common.values_list("image_id", flat=True))
    ours, theirs = _accuracy_on(version, ids), _accuracy_on(live, ids)
    if ours is None or theirs is None or ours <= theirs:
        logger.info("Policy shadow of %s skipped: %s vs live %s", version, ours, theirs)
        return False
    rollout.version_shadow_unapproved(
        version=version,
        reason=(
            f"policy: {ours:.1%} against {live.label}'s {theirs:.1%} on the {len(ids)} "
            "validation images both scored; approval and traffic stay a person's decision"
        ),
    )
    return True
