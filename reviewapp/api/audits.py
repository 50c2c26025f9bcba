"""Label audits: start one, follow it, and read its out-of-fold scores in any queue order."""

from datetime import datetime
from typing import Literal

from django.http import Http404
from ninja import Field, Query, Router, Schema, Status

from .. import audits
from ..models import AuditScore, LabelAudit
from .auth import require_perm
from .common import Id, InputSchema, absolute_reverse, db_id, project_or_404
from .errors import ERROR_RESPONSES, QUEUE_RESPONSES
from .versions import SCORES_DEFAULT_LIMIT, SCORES_MAX_LIMIT, SCORES_MAX_OFFSET

__all__ = ["router"]

router = Router()

# The old bare list of /scores, kept at /scores-by-offset for one release (see README).
LEGACY_MAX_OFFSET = 1_000_000
# Audits reuse the permissions of what they stand for (see reviewapp/views/audits.py).
START_PERM = "reviewapp.add_trainingrun"
VIEW_PERM = "reviewapp.view_imagescore"
Sort = Literal["loss", "self_confidence", "normalized_margin", "confident_learning"]


class LabelAuditIn(InputSchema):
    mode: Literal["fast", "full"] = Field(
        "fast", description="fast: linear heads on embeddings; full: one model per fold."
    )
    k: int = Field(5, description="Folds: one job each.")
    version_id: Id | None = Field(None, description="The embedding model; default latest.")


class LabelAuditOut(Schema):
    id: int
    project: str
    version_id: int
    mode: str
    k: int
    status: str
    phase: str
    folds_done: int
    n_images: int
    estimated_issues: int | None = Field(
        description="Confident learning's estimate; see issues_range and weak before using it."
    )
    n_issues: int | None = Field(description="Images confident learning flags.")
    n_duplicate_groups: int | None
    n_leaks: int | None = Field(description="Duplicate groups across train and valid.")
    oof_accuracy: float | None = Field(description="Out-of-fold accuracy on the given labels.")
    chance_accuracy: float | None = Field(
        description="The largest class's share: the accuracy of always guessing it."
    )
    version_accuracy: float | None = Field(description="The version's validation accuracy.")
    issues_range: list[int] | None = Field(
        description="[low, high] wrong labels: clear disagreements to every disagreement."
    )
    weak: bool | None = Field(
        description="The fold models are near chance: the order and the count say little."
    )
    warning: str = Field(description="Why the order is weak, in words; empty if it is not.")
    weak_classes: list[str]
    suggestions: list[str] = Field(description="What would make the audit more telling.")
    default_sort: str
    error_message: str
    created_by: str | None
    created_at: datetime
    started_at: datetime | None = Field(description="When a worker began it; null while queued.")
    finished_at: datetime | None
    url: str | None


class AuditScoreOut(Schema):
    image_id: int
    label: str | None
    predicted: str | None
    probabilities: dict[str, float] = Field(description="Out-of-fold, per class name.")
    fold: int
    split: str
    loss: float
    self_confidence: float
    normalized_margin: float | None
    is_issue: bool
    outlier_score: float | None
    duplicate_group: int | None
    leaks: bool


class AuditScorePageOut(Schema):
    items: list[AuditScoreOut]
    next: str | None = Field(description="URL of the next page; null on the last page.")


class AuditScoreByOffsetOut(AuditScoreOut):
    probabilities: list[float] = Field(description="Out-of-fold, in the audit's vocab order.")


def _audit_out(request, audit: LabelAudit) -> dict:
    return {
        "id": audit.pk,
        "project": audit.project.slug,
        "version_id": audit.version_id,
        "mode": audit.mode,
        "k": audit.k,
        "status": audit.status,
        "phase": audit.phase,
        "folds_done": audit.folds_done,
        "n_images": audit.n_images,
        "estimated_issues": audit.estimated_issues,
        "n_issues": audit.n_issues,
        "n_duplicate_groups": audit.n_duplicate_groups,
        "n_leaks": audit.n_leaks,
        "oof_accuracy": audit.oof_accuracy,
        "chance_accuracy": audit.chance_accuracy,
        "version_accuracy": audit.version_accuracy,
        "issues_range": (
            [audit.issues_low, audit.issues_high] if audit.issues_low is not None else None
        ),
        "weak": audit.trust.get("weak"),
        "warning": audit.trust.get("warning", ""),
        "weak_classes": audit.trust.get("weak_classes", []),
        "suggestions": audit.trust.get("suggestions", []),
        "default_sort": audits.DEFAULT_SORT,
        "error_message": audit.error_message,
        "created_by": audit.created_by.get_username() if audit.created_by else None,
        "created_at": audit.created_at,
        "started_at": audit.started_at,
        "finished_at": audit.finished_at,
        "url": absolute_reverse(request, "label-audit", pk=audit.pk),
    }


def _audit_or_404(audit_id: int) -> LabelAudit:
    audit = (
        LabelAudit.objects.defer("snapshot")
        .select_related("project", "created_by")
        .filter(pk=db_id(audit_id))
        .first()
    )
    if audit is None:
        raise Http404(f"No label audit {audit_id}.")
    return audit


@router.post(
    "/projects/{slug}/label-audits",
    response={201: LabelAuditOut, **ERROR_RESPONSES, **QUEUE_RESPONSES},
    tags=["label audits"],
)
def label_audit_start(request, slug: str, payload: LabelAuditIn = None):
    """Queue a label audit: k fold jobs score every labeled image out-of-fold."""
    require_perm(request, START_PERM, "start label audits")
    project = project_or_404(slug)
    payload = payload or LabelAuditIn()
    version = None
    if payload.version_id is not None:
        version = project.model_versions.filter(pk=payload.version_id).first()
        if version is None:
            raise Http404(f"No model version {payload.version_id} in project '{slug}'.")
    audit = audits.label_audit_create(
        project=project,
        mode=payload.mode,
        k=payload.k,
        actor=request.auth,
        version=version,
        fail_if_unqueued=True,
    )
    return Status(201, _audit_out(request, _audit_or_404(audit.pk)))


@router.get(
    "/label-audits/{audit_id}",
    response={200: LabelAuditOut, **ERROR_RESPONSES},
    tags=["label audits"],
)
def label_audit_detail(request, audit_id: int):
    """An audit's status, fold progress and, once done, its estimated number of issues."""
    require_perm(request, VIEW_PERM, "view label audits")
    return _audit_out(request, _audit_or_404(audit_id))


@router.post(
    "/label-audits/{audit_id}/cancel",
    response={200: LabelAuditOut, **ERROR_RESPONSES},
    tags=["label audits"],
)
def label_audit_cancel(request, audit_id: int):
    """Stop a queued or running audit (one whose worker died, too); its scores are not kept.

    An audit that has already finished answers 400.
    """
    require_perm(request, START_PERM, "cancel label audits")
    audits.label_audit_cancel(audit=_audit_or_404(audit_id), actor=request.auth)
    return _audit_out(request, _audit_or_404(audit_id))


def _score_out(audit: LabelAudit, score: AuditScore) -> dict:
    return {
        "image_id": score.image_id,
        "label": score.label.name if score.label else None,
        "predicted": score.predicted.name if score.predicted else None,
        "probabilities": dict(zip(audit.vocab, score.probabilities, strict=False)),
        "fold": score.fold,
        "split": score.split,
        "loss": score.loss,
        "self_confidence": score.self_confidence,
        "normalized_margin": score.margin,
        "is_issue": score.is_issue,
        "outlier_score": score.outlier_score,
        "duplicate_group": score.duplicate_group,
        "leaks": score.leaks,
    }


def _score_queryset(audit: LabelAudit, queue: str, sort: Sort | None):
    return audits.audit_score_queryset(
        audit=audit, queue=queue, sort=sort or audits.DEFAULT_SORT
    ).select_related("label", "predicted")


@router.get(
    "/label-audits/{audit_id}/scores",
    response={200: AuditScorePageOut, **ERROR_RESPONSES},
    tags=["label audits"],
)
def label_audit_scores(
    request,
    audit_id: int,
    sort: Sort | None = None,
    queue: Literal["issues", "duplicates", "outliers"] = "issues",
    limit: int = Query(SCORES_DEFAULT_LIMIT, ge=1, le=SCORES_MAX_LIMIT),
    offset: int = Query(
        0, ge=0, le=SCORES_MAX_OFFSET, description="Skip this many; follow ``next`` instead."
    ),
):
    """The audit's out-of-fold scores in a queue's order, most suspicious first.

    Pages as the version scores do: follow ``next`` for more; no total is counted.
    """
    require_perm(request, VIEW_PERM, "view label audits")
    audit = _audit_or_404(audit_id)
    end = offset + limit
    # One row more than asked tells whether there is a next page, without a COUNT.
    page: list[AuditScore] = list(_score_queryset(audit, queue, sort)[offset : end + 1])
    next_url = None
    if len(page) > limit and end <= SCORES_MAX_OFFSET:
        query = request.GET.copy()
        query["offset"] = str(end)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {"items": [_score_out(audit, s) for s in page[:limit]], "next": next_url}


@router.get(
    "/label-audits/{audit_id}/scores-by-offset",
    response={200: list[AuditScoreByOffsetOut], **ERROR_RESPONSES},
    tags=["label audits"],
    deprecated=True,
)
def label_audit_scores_by_offset(
    request,
    audit_id: int,
    sort: Sort | None = None,
    queue: Literal["issues", "duplicates", "outliers"] = "issues",
    limit: int = Query(SCORES_DEFAULT_LIMIT, ge=1, le=SCORES_MAX_LIMIT),
    offset: int = Query(0, ge=0, le=LEGACY_MAX_OFFSET),
):
    """Deprecated, removed in 0.2.0: the old ``/scores``, for clients not yet moved to it.

    A bare list paged by ``offset``, probabilities a list in the audit's ``vocab`` order.
    """
    require_perm(request, VIEW_PERM, "view label audits")
    audit = _audit_or_404(audit_id)
    scores = _score_queryset(audit, queue, sort)[offset : offset + limit]
    return [{**_score_out(audit, s), "probabilities": s.probabilities} for s in scores]
