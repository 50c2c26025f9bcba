"""Label audits: out-of-fold scoring, label-issue rankings, near-duplicates and outliers.

The adapter between ``trainer.folds``/``trainer.ranking`` and the database, as
the ``training`` package is for training. An audit runs as jobs on the ``training`` queue: one
prepares (freezes the data, assigns folds, embeds every image with the base version's
body), k fold jobs score their held-out fold (on any number of workers), and the job that
finishes the last fold ranks the labels and finds near-duplicates and outliers.
"""

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, QuerySet
from django.urls import reverse
from django.utils import timezone

from trainer.ranking import DEFAULT_RANKING, RANKINGS

from . import enqueue as jobs
from . import events
from .models import AuditScore, Category, Image, LabelAudit, ModelVersion, Project
from .selectors import attach_recent_events

__all__ = [
    "DEFAULT_SORT",
    "QUEUES",
    "SORTS",
    "AuditOutcome",
    "audit_score_page",
    "label_audit_cancel",
    "label_audit_create",
    "label_audit_execute_fold",
    "label_audit_finish",
    "label_audit_prepare",
    "label_audit_run_inline",
]

logger = logging.getLogger(__name__)

# The label-issue queue's orders, most suspicious first; the default is the best
# precision@k of bench/label_noise.py.
DEFAULT_SORT = DEFAULT_RANKING
SORTS = {
    "loss": ("Loss (highest first)", ("-loss", "id")),
    "self_confidence": ("Self-confidence (lowest first)", ("self_confidence", "id")),
    "normalized_margin": ("Normalized margin (lowest first)", ("margin", "id")),
    "confident_learning": (
        "Confident learning (issues first, then by margin)",
        ("-is_issue", "margin", "id"),
    ),
}
assert set(SORTS) == set(RANKINGS)
QUEUES = ("issues", "duplicates", "outliers")
# Cosine similarity of centred embeddings from which two images count as near-duplicates.
DUPLICATE_THRESHOLD = 0.95
OUTLIER_NEIGHBOURS = 5
MAX_K = 20
SCORE_CHUNK = 500


class AuditOutcome:
    DONE = "done"
    SKIPPED = "skipped"  # not in the state the job expects: a redelivered message
    LAST = "last"  # this fold was the last one: the finishing job comes next


# Starting an audit ----------------------------------------------------------------------


@transaction.atomic
def label_audit_create(
    *,
    project: Project,
    mode: str,
    k: int,
    actor=None,
    version: ModelVersion | None = None,
    enqueue: bool = True,
    reason: str = "",
    fail_if_unqueued: bool = False,
) -> LabelAudit:
    """Queue an audit of the project's labeled images against ``version`` (default: latest).

    ``fail_if_unqueued``: as in ``training.training_run_create``.
    """
    from .training import CONFIG_FIELDS, train_config_for

    errors = {}
    if mode not in LabelAudit.Mode.values:
        errors["mode"] = f"Mode must be one of {', '.join(LabelAudit.Mode.values)}."
    if not isinstance(k, int) or not 2 <= k <= MAX_K:
        errors["k"] = f"The number of folds must be between 2 and {MAX_K}."
    if errors:
        raise ValidationError(errors)
    if version is None:
        version = project.model_versions.order_by("-number").first()
    elif version.project_id != project.pk:
        raise ValidationError({"version": "That model version belongs to another project."})
    if version is None:
        raise ValidationError(
            "A label audit needs a trained model (its body embeds the images): train one first."
        )
    counts = dict(
        Image.objects.filter(project=project, status=Image.Status.ACTIVE, label__isnull=False)
        .values_list("label__name")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("label__name", "n")
    )
    if len(counts) < 2:
        raise ValidationError("A label audit needs labeled images in at least two classes.")
    if sum(counts.values()) < k:
        raise ValidationError(
            {"k": f"{k} folds need at least {k} labeled images; there are {sum(counts.values())}."}
        )
    config = {}
    if mode == LabelAudit.Mode.FULL:
        # Fold models are trained as the base version was.
        saved = version.config or {}
        overrides = {name: value for name, value in saved.items() if name in CONFIG_FIELDS}
        config = train_config_for(project, overrides).to_dict()
    audit = LabelAudit.objects.create(
        project=project,
        version=version,
        mode=mode,
        k=k,
        seed=project.split_seed,
        config=config,
        created_by=actor,
        reason=reason[:300],
    )
    if enqueue and fail_if_unqueued:
        jobs.send_or_fail(
            jobs.AUDIT_START,
            audit.pk,
            # Not announced: the person is told by the answer, and the broker is down anyway.
            on_failure=lambda message: _fail(audit.pk, message, announce=False),
        )
    elif enqueue:
        jobs.send(jobs.AUDIT_START, audit.pk)
    return audit


@transaction.atomic
def label_audit_cancel(*, audit: LabelAudit, actor=None) -> LabelAudit:
    """Stop an audit that is queued or running (a stuck one too: its worker may have died).

    Its jobs skip a cancelled audit; a fold already training finishes, and its scores are
    not kept. The scores of folds done so far and the embeddings are removed.
    """
    audit = LabelAudit.objects.select_for_update().get(pk=audit.pk)
    if audit.is_finished:
        raise ValidationError(
            f"Label audit #{audit.pk} has already {audit.get_status_display().lower()}."
        )
    audit.status = LabelAudit.Status.CANCELLED
    audit.phase = LabelAudit.Phase.DONE
    audit.finished_at = timezone.now()
    who = f" by {actor.get_username()}" if actor else ""
    audit.error_message = f"Cancelled{who} after {audit.folds_done} of {audit.k} folds."
    audit.save(update_fields=["status", "phase", "finished_at", "error_message"])
    audit.scores.all().delete()
    directory = _audit_dir(audit)
    transaction.on_commit(lambda: shutil.rmtree(directory, ignore_errors=True))
    return audit


def _audit_dir(audit: LabelAudit) -> Path:
    return Path(settings.MEDIA_ROOT) / "audits" / str(audit.project_id) / f"audit-{audit.pk}"


def _embeddings_path(audit: LabelAudit) -> Path:
    return _audit_dir(audit) / "embeddings.npy"


def _fail(audit_id: int, message: str, *, announce: bool = True) -> None:
    unfinished = (LabelAudit.Status.PENDING, LabelAudit.Status.RUNNING)
    failed = LabelAudit.objects.filter(pk=audit_id, status__in=unfinished).update(
        status=LabelAudit.Status.FAILED,
        phase=LabelAudit.Phase.DONE,
        error_message=message,
        finished_at=timezone.now(),
    )
    audit = LabelAudit.objects.filter(pk=audit_id).first()
    if audit is not None:
        shutil.rmtree(_audit_dir(audit), ignore_errors=True)
    if failed and announce:
        audit_announce(audit_id=audit_id)


def audit_announce(*, audit_id: int) -> None:
    """Tell who started an audit how it ended, and the project's webhooks."""
    audit = (
        LabelAudit.objects.select_related("project", "created_by", "version")
        .defer("snapshot")
        .get(pk=audit_id)
    )
    project = audit.project
    if audit.status == LabelAudit.Status.SUCCEEDED:
        found = (
            f"{audit.issues_low}-{audit.issues_high} likely label issues"
            if audit.issues_low is not None and audit.issues_high is not None
            else f"{audit.n_issues} label issues"
        )
        message = f"{project.name}: label audit #{audit.pk} finished: {found}."
    else:
        message = f"{project.name}: label audit #{audit.pk} failed: {audit.error_message[:200]}"
    events.emit(
        "audit.finished",
        project=project,
        data={
            "audit_id": audit.pk,
            "status": audit.status,
            "mode": audit.mode,
            "version": audit.version.number,
            "n_issues": audit.n_issues,
            "issues_low": audit.issues_low,
            "issues_high": audit.issues_high,
            "oof_accuracy": audit.oof_accuracy,
            "reason": audit.reason,
            "error_message": audit.error_message,
        },
        message=message,
        link=reverse("label-audit", kwargs={"pk": audit.pk}),
        users=[audit.created_by],
    )


def _guarded(audit_id: int, work):
    """Run ``work``; a known failure fails the audit with its message, others are re-raised."""
    from trainer import ConfigError, TrainingError

    try:
        return work()
    except (TrainingError, ConfigError, ValueError) as exc:
        _fail(audit_id, str(exc))
        return AuditOutcome.DONE
    except OSError as exc:  # a model or image file gone from MEDIA_ROOT
        _fail(audit_id, f"A file cannot be read: {exc}. Check MEDIA_ROOT, then start again.")
        return AuditOutcome.DONE
    except Exception as exc:
        _fail(audit_id, f"Unexpected error: {type(exc).__name__}: {exc}")
        raise


# Preparing: snapshot, folds, embeddings ---------------------------------------------------


def label_audit_prepare(*, audit_id: int, redelivered: bool = False) -> str:
    """Claim a pending audit, freeze its data, assign folds and embed every image.

    A redelivered message of an audit still preparing means its worker died: prepare again
    (fold and finishing jobs are idempotent already: a fold's scores are written once).
    """
    with transaction.atomic():
        audit = LabelAudit.objects.select_for_update().filter(pk=audit_id).first()
        restart = (
            redelivered
            and audit is not None
            and audit.status == LabelAudit.Status.RUNNING
            and audit.phase == LabelAudit.Phase.PREPARING
        )
        if audit is None or (audit.status != LabelAudit.Status.PENDING and not restart):
            return AuditOutcome.SKIPPED
        audit.status = LabelAudit.Status.RUNNING
        audit.phase = LabelAudit.Phase.PREPARING
        audit.started_at = timezone.now()
        audit.save(update_fields=["status", "phase", "started_at"])
    return _guarded(audit_id, lambda: _prepare(audit))


def _prepare(audit: LabelAudit) -> str:
    from trainer import assign_folds, embed

    rows = list(
        Image.objects.filter(
            project_id=audit.project_id, status=Image.Status.ACTIVE, label__isnull=False
        )
        .order_by("id")
        .values_list("id", "label__name", "split", "file", "sha256")
    )
    folds = assign_folds([r[4] for r in rows], [r[1] for r in rows], audit.k, audit.seed)
    media = Path(settings.MEDIA_ROOT)
    features = embed(
        audit.version.artifact_path(),
        audit.version.export_sha256,
        [str(media / r[3]) for r in rows],
    )
    path = _embeddings_path(audit)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, features)
    prepared = LabelAudit.objects.filter(pk=audit.pk, status=LabelAudit.Status.RUNNING).update(
        snapshot=[[r[0], r[1], r[2], f] for r, f in zip(rows, folds, strict=True)],
        vocab=sorted({r[1] for r in rows}),
        n_images=len(rows),
        phase=LabelAudit.Phase.FOLDS,
    )
    if not prepared:  # cancelled while it embedded the images
        shutil.rmtree(_audit_dir(audit), ignore_errors=True)
        return AuditOutcome.SKIPPED
    return AuditOutcome.DONE


# One fold ---------------------------------------------------------------------------------


def label_audit_execute_fold(*, audit_id: int, fold: int) -> str:
    """Score one held-out fold; the job that completes the last fold answers LAST."""
    audit = LabelAudit.objects.filter(pk=audit_id).first()
    if (
        audit is None
        or audit.status != LabelAudit.Status.RUNNING
        or audit.phase != LabelAudit.Phase.FOLDS
        or fold in audit.folds_finished
        or not 0 <= fold < audit.k
    ):
        return AuditOutcome.SKIPPED
    return _guarded(audit_id, lambda: _execute_fold(audit, fold))


def _fold_probabilities(audit: LabelAudit, fold: int) -> tuple[list[int], np.ndarray]:
    """Held-out indices into the snapshot, and their out-of-fold probabilities."""
    from trainer import TrainConfig, fit_linear_folds, train_fold

    folds = [row[3] for row in audit.snapshot]
    index = {name: i for i, name in enumerate(audit.vocab)}
    if audit.mode == LabelAudit.Mode.FAST:
        features = np.load(_embeddings_path(audit))
        labels = [index[row[1]] for row in audit.snapshot]
        probs = fit_linear_folds(features, labels, folds, len(audit.vocab), only_fold=fold)
        held_out = [i for i, f in enumerate(folds) if f == fold]
        return held_out, probs[held_out]
    paths = dict(
        Image.objects.filter(pk__in=[row[0] for row in audit.snapshot]).values_list("id", "file")
    )
    media = Path(settings.MEDIA_ROOT)
    items = [(str(media / paths[row[0]]), row[1]) for row in audit.snapshot]
    from .backbones import pretrained_weights_for

    held_out, scores = train_fold(
        items,
        folds,
        fold,
        TrainConfig.from_dict(audit.config),
        output_dir=_audit_dir(audit) / f"fold-{fold}",
        # The base version's run fetched them if they could be had: no download per fold.
        weights=pretrained_weights_for(audit.config, fetch=False),
    )
    # train() builds its vocab from every item it is given: the audit's sorted class names.
    return held_out, np.array([s.probabilities for s in scores], dtype=np.float64)


def _execute_fold(audit: LabelAudit, fold: int) -> str:
    from trainer import loss, self_confidence

    held_out, probs = _fold_probabilities(audit, fold)
    index = {name: i for i, name in enumerate(audit.vocab)}
    labels = np.array([index[audit.snapshot[i][1]] for i in held_out], dtype=np.int64)
    categories = {c.name: c.pk for c in Category.objects.filter(project_id=audit.project_id)}
    losses, confidences = loss(probs, labels), self_confidence(probs, labels)
    rows = [
        AuditScore(
            audit_id=audit.pk,
            image_id=audit.snapshot[i][0],
            label_id=categories.get(audit.snapshot[i][1]),
            predicted_id=categories.get(audit.vocab[int(p.argmax())]),
            probabilities=[round(float(v), 6) for v in p],
            fold=fold,
            split=audit.snapshot[i][2],
            loss=float(lo),
            self_confidence=float(c),
        )
        for i, p, lo, c in zip(held_out, probs, losses, confidences, strict=True)
    ]
    with transaction.atomic():
        locked = LabelAudit.objects.select_for_update().get(pk=audit.pk)
        if locked.status != LabelAudit.Status.RUNNING or fold in locked.folds_finished:
            return AuditOutcome.SKIPPED  # another delivery of this fold got there first
        AuditScore.objects.bulk_create(rows, batch_size=SCORE_CHUNK)
        locked.folds_finished = sorted([*locked.folds_finished, fold])
        last = len(locked.folds_finished) == locked.k
        if last:
            locked.phase = LabelAudit.Phase.FINISHING
        locked.save(update_fields=["folds_finished", "phase"])
    return AuditOutcome.LAST if last else AuditOutcome.DONE


# Finishing: rankings, duplicates, outliers -------------------------------------------------


def label_audit_finish(*, audit_id: int) -> str:
    """Rank every label (confident learning needs all folds) and group the embeddings."""
    audit = LabelAudit.objects.filter(pk=audit_id).first()
    if (
        audit is None
        or audit.status != LabelAudit.Status.RUNNING
        or audit.phase != LabelAudit.Phase.FINISHING
    ):
        return AuditOutcome.SKIPPED
    return _guarded(audit_id, lambda: _finish(audit))


def _finish(audit: LabelAudit) -> str:
    from trainer import confident_learning, near_duplicates, normalized_margin, outlier_scores

    position = {row[0]: i for i, row in enumerate(audit.snapshot)}
    scores = sorted(audit.scores.all(), key=lambda s: position[s.image_id])
    index = {name: i for i, name in enumerate(audit.vocab)}
    probs = np.array([s.probabilities for s in scores], dtype=np.float64)
    labels = np.array([index[audit.snapshot[position[s.image_id]][1]] for s in scores])
    learning = confident_learning(probs, labels)
    margins = normalized_margin(probs, labels)
    trust = _trust(audit, probs, labels)
    features = np.load(_embeddings_path(audit))
    groups = near_duplicates(features, DUPLICATE_THRESHOLD)
    outliers = outlier_scores(features, OUTLIER_NEIGHBOURS)
    splits_of: dict[int, set[str]] = {}
    for group, score in zip(groups.tolist(), scores, strict=True):
        if group >= 0:
            splits_of.setdefault(group, set()).add(score.split)
    for i, score in enumerate(scores):
        score.margin = float(margins[i])
        score.is_issue = bool(learning.is_issue[i])
        score.outlier_score = float(outliers[i])
        group = int(groups[i])
        score.duplicate_group = group if group >= 0 else None
        score.leaks = group >= 0 and len(splits_of[group]) > 1
    with transaction.atomic():
        AuditScore.objects.bulk_update(
            scores,
            ["margin", "is_issue", "outlier_score", "duplicate_group", "leaks"],
            batch_size=SCORE_CHUNK,
        )
        LabelAudit.objects.filter(pk=audit.pk, status=LabelAudit.Status.RUNNING).update(
            status=LabelAudit.Status.SUCCEEDED,
            phase=LabelAudit.Phase.DONE,
            estimated_issues=learning.estimated_issues,
            n_issues=int(learning.is_issue.sum()),
            thresholds=[round(float(t), 6) for t in learning.thresholds],
            oof_accuracy=trust.accuracy,
            chance_accuracy=trust.chance_accuracy,
            version_accuracy=trust.version_accuracy,
            issues_low=trust.issues_low,
            issues_high=trust.issues_high,
            trust=trust.to_dict(),
            n_duplicate_groups=len(splits_of),
            n_leaks=sum(1 for s in splits_of.values() if len(s) > 1),
            finished_at=timezone.now(),
        )
        audit_announce(audit_id=audit.pk)
    shutil.rmtree(_audit_dir(audit), ignore_errors=True)
    return AuditOutcome.DONE


def _trust(audit: LabelAudit, probs: np.ndarray, labels: np.ndarray):
    """How far to trust the audit's order, with advice in terms of the base version's run."""
    from trainer import out_of_fold_trust

    version = audit.version
    config = audit.config or version.config or {}
    return out_of_fold_trust(
        labels,
        probs,
        class_names=audit.vocab,
        version_accuracy=version.accuracy,
        fast=audit.mode == LabelAudit.Mode.FAST,
        pretrained=version.pretrained,
        epochs=config.get("epochs"),
        image_size=config.get("image_size"),
    )


def label_audit_run_inline(*, audit_id: int) -> LabelAudit:
    """Every job of a pending audit in this process, one after the other (no worker)."""
    label_audit_prepare(audit_id=audit_id)
    audit = LabelAudit.objects.get(pk=audit_id)
    for fold in range(audit.k):
        if label_audit_execute_fold(audit_id=audit_id, fold=fold) == AuditOutcome.LAST:
            label_audit_finish(audit_id=audit_id)
    return LabelAudit.objects.get(pk=audit_id)


# Reads -------------------------------------------------------------------------------------


@dataclass
class AuditPage:
    scores: list[AuditScore]
    page: int
    has_next: bool


def audit_score_queryset(*, audit: LabelAudit, queue: str, sort: str = "") -> QuerySet:
    """An audit's scores for one queue, in that queue's order."""
    qs = AuditScore.objects.filter(audit=audit)
    if queue == "duplicates":
        # Groups that straddle train and valid leak: first.
        return qs.filter(duplicate_group__isnull=False).order_by("-leaks", "duplicate_group", "id")
    if queue == "outliers":
        return qs.filter(outlier_score__isnull=False).order_by("-outlier_score", "id")
    return qs.order_by(*SORTS.get(sort, SORTS[DEFAULT_SORT])[1])


def audit_score_page(
    *, audit: LabelAudit, queue: str, sort: str = "", page: int = 1, limit: int = 24
) -> AuditPage:
    """One page of a queue, with each card's latest decisions attached."""
    page = max(1, page)
    qs = audit_score_queryset(audit=audit, queue=queue, sort=sort).select_related(
        "image__label", "label", "predicted"
    )
    scores = list(qs[(page - 1) * limit : page * limit + 1])
    has_next = len(scores) > limit
    scores = scores[:limit]
    attach_recent_events(scores)
    return AuditPage(scores=scores, page=page, has_next=has_next)
