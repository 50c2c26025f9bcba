"""Model versions: read them, their scores and ONNX files, and compare two of them."""

import json
from datetime import datetime
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404
from ninja import Field, Query, Router, Schema
from pydantic import field_validator

from .. import model_files, selectors, serving
from ..models import Category, Image, ImageScore, ModelVersion, Project
from .auth import require_perm
from .common import (
    PageQuery,
    absolute_reverse,
    page_of,
    page_schema,
    project_or_404,
    version_or_404,
)
from .errors import ERROR_RESPONSES

__all__ = ["model_version_out", "router"]

router = Router()

SCORES_DEFAULT_LIMIT = 100
SCORES_MAX_LIMIT = 1000
# Offset paging costs O(offset) in the database; past this, filter by label or split instead.
SCORES_MAX_OFFSET = 100_000
CHANGES_DEFAULT_LIMIT = 200
CHANGES_MAX_LIMIT = 1000


class ModelVersionOut(Schema):
    id: int
    project: str  # the project's slug
    number: int
    label: str  # "v1"
    stage: ModelVersion.Stage
    created_at: datetime
    accuracy: float | None = Field(description="On the validation split.")
    error_rate: float | None
    pretrained: bool
    pretrained_note: str
    run_id: int | None
    url: str | None


class ConfusionMatrixOut(Schema):
    classes: list[str] = Field(description="The model's classes, in its output order.")
    matrix: list[list[int]] = Field(
        description="Rows: actual class, columns: predicted class, on the validation split."
    )


class ModelVersionDetailOut(ModelVersionOut):
    metrics: dict[str, Any]
    vocab: list[str]
    confusion_matrix: ConfusionMatrixOut
    export_file: str = Field(description="The fastai export (a pickle), relative to MEDIA_ROOT.")
    export_sha256: str
    weights_sha256: str
    onnx_file: str = Field(
        description="The ONNX export, relative to MEDIA_ROOT; '' when none was made."
    )
    onnx_sha256: str
    onnx_max_prob_diff: float | None = Field(
        description="Largest probability difference between the ONNX model (fed by the spec's "
        "preprocessing) and fastai's own predictions, on the validation images."
    )
    onnx_parity_images: int = Field(description="How many validation images that was measured on.")
    onnx_error: str = Field(description="Why the ONNX export is not served; '' when it is.")
    runtime: Literal["onnxruntime", "torch"] = Field(
        description="What answers this version's predictions."
    )
    onnx_url: str | None = Field(description="Download the ONNX model (API).")
    onnx_spec_url: str | None = Field(description="Its preprocessing spec as JSON (API).")
    config: dict[str, Any]
    n_scored: int
    snapshot_sha256: str


def model_version_out(request, version: ModelVersion) -> dict:
    return {
        "id": version.pk,
        "project": version.project.slug,
        "number": version.number,
        "label": version.label,
        "stage": version.stage,
        "created_at": version.created_at,
        "accuracy": version.accuracy,
        "error_rate": version.error_rate,
        "pretrained": version.pretrained,
        "pretrained_note": version.pretrained_note,
        "run_id": version.run_id,
        "url": absolute_reverse(request, "model-version", pk=version.pk),
    }


ModelVersionPageOut = page_schema(ModelVersionOut, "ModelVersionPageOut")


@router.get(
    "/projects/{slug}/model-versions",
    response={200: ModelVersionPageOut, **ERROR_RESPONSES},
    tags=["models"],
)
def model_version_list(request, slug: str, paging: Query[PageQuery]):
    """The project's model versions, newest first; follow ``next`` for older ones."""
    require_perm(request, "reviewapp.view_modelversion", "view model versions")
    project = project_or_404(slug)
    versions, next_url = page_of(
        request,
        selectors.model_version_list(project=project),
        offset=paging.offset,
        limit=paging.limit,
    )
    for version in versions:
        version.project = project
    return {"items": [model_version_out(request, v) for v in versions], "next": next_url}


@router.get(
    "/model-versions/{version_id}",
    response={200: ModelVersionDetailOut, **ERROR_RESPONSES},
    tags=["models"],
)
def model_version_detail(request, version_id: int):
    """A version with its metrics, confusion matrix, config and artifacts' sha256."""
    require_perm(request, "reviewapp.view_modelversion", "view model versions")
    version = version_or_404(version_id)
    return {
        **model_version_out(request, version),
        "metrics": version.metrics,
        "vocab": version.vocab,
        "confusion_matrix": {"classes": version.vocab, "matrix": version.confusion_matrix},
        "export_file": version.export_file,
        "export_sha256": version.export_sha256,
        "weights_sha256": version.weights_sha256,
        "onnx_file": version.onnx_file,
        "onnx_sha256": version.onnx_sha256,
        "onnx_max_prob_diff": version.onnx_max_prob_diff,
        "onnx_parity_images": version.onnx_parity_images,
        "onnx_error": version.onnx_error,
        "runtime": serving.runtime_for(version),
        "onnx_url": absolute_reverse(request, "api:model_version_onnx", version_id=version.pk)
        if version.onnx_file
        else None,
        "onnx_spec_url": absolute_reverse(
            request, "api:model_version_onnx_spec", version_id=version.pk
        )
        if version.onnx_spec
        else None,
        "config": version.config,
        "n_scored": version.n_scored,
        "snapshot_sha256": version.snapshot_sha256,
    }


@router.get(
    "/model-versions/{version_id}/onnx",
    response={200: None, **ERROR_RESPONSES},
    tags=["models"],
    openapi_extra={
        "responses": {
            200: {
                "description": "The ONNX model file (float32 NCHW input 'images', output "
                "'logits'); its sha256 in the X-Loupe-SHA256 header.",
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        }
    },
)
def model_version_onnx(request, version_id: int):
    """Download the version's ONNX model, checked against its recorded sha256 first."""
    require_perm(request, "reviewapp.view_modelversion", "download model versions")
    try:
        found = model_files.onnx_download(version=version_or_404(version_id))
    except model_files.ModelFileMissing as exc:
        raise Http404(str(exc)) from None
    response = FileResponse(
        open(found.path, "rb"),  # noqa: SIM115 - the response closes it
        as_attachment=True,
        filename=found.filename,
        content_type="application/octet-stream",
    )
    response["X-Loupe-SHA256"] = found.sha256
    return response


@router.get(
    "/model-versions/{version_id}/onnx-spec",
    response={200: dict[str, Any], **ERROR_RESPONSES},
    tags=["models"],
)
def model_version_onnx_spec(request, version_id: int):
    """The ONNX model's preprocessing spec: input size, resize method, padding, normalisation
    statistics and class order (what ``trainer.preprocess`` follows)."""
    require_perm(request, "reviewapp.view_modelversion", "view model versions")
    try:
        _, text = model_files.onnx_spec_download(version=version_or_404(version_id))
    except model_files.ModelFileMissing as exc:
        raise Http404(str(exc)) from None
    return json.loads(text)


# Scores -----------------------------------------------------------------------------


class ScoreFilters(Schema):
    label: str | None = Field(None, description="The given label: a category name.")
    predicted: str | None = Field(None, description="The predicted class: a category name.")
    split: Image.Split | None = None
    order: Literal[tuple(selectors.SCORE_ORDERS)] = Field(
        "loss",
        description="loss: highest first (likeliest label errors); confidence: least "
        "confident first; -confidence: most confident first.",
    )
    limit: int = Field(SCORES_DEFAULT_LIMIT, ge=1, le=SCORES_MAX_LIMIT)
    offset: int = Field(
        0, ge=0, le=SCORES_MAX_OFFSET, description="Skip this many; follow ``next`` instead."
    )

    @field_validator("label", "predicted", "split", mode="before")
    @classmethod
    def empty_means_omitted(cls, value):
        # A filter form sends "split=" for "any split"; treat it as not sent.
        return None if value == "" else value


class ScoreOut(Schema):
    image_id: int
    label: str | None = Field(description="The image's label when it was scored.")
    predicted: str | None
    correct: bool
    confidence: float
    loss: float | None = Field(description="Null when the image had no usable label.")
    split: Image.Split
    in_training: bool = Field(description="The model was fit on it: its loss is in-sample.")
    probabilities: dict[str, float] = Field(description="Per class, in the model's order.")
    thumbnail_url: str | None


class ScorePageOut(Schema):
    items: list[ScoreOut]
    next: str | None = Field(description="URL of the next page; null on the last page.")


def _category_id(project: Project, field: str, name: str | None) -> int | None:
    """The id of the project's category ``name``; a 400 naming the valid ones otherwise."""
    if name is None:
        return None
    category_id = project.categories.filter(name=name).values_list("pk", flat=True).first()
    if category_id is None:
        valid = ", ".join(f"'{n}'" for n in project.categories.values_list("name", flat=True))
        raise ValidationError(
            {
                field: f"No category '{name}' in project '{project.slug}'. "
                f"Valid labels: {valid or 'none yet'}."
            }
        )
    return category_id


def _score_out(request, version: ModelVersion, score: ImageScore) -> dict:
    return {
        "image_id": score.image_id,
        "label": score.label.name if score.label_id else None,
        "predicted": score.predicted.name if score.predicted_id else None,
        "correct": score.is_correct,
        "confidence": score.confidence,
        "loss": score.loss,
        "split": score.split,
        "in_training": score.in_training,
        "probabilities": dict(zip(version.vocab, score.probabilities, strict=False)),
        "thumbnail_url": absolute_reverse(request, "image-thumbnail", pk=score.image_id),
    }


@router.get(
    "/model-versions/{version_id}/scores",
    response={200: ScorePageOut, **ERROR_RESPONSES},
    tags=["models"],
)
def model_version_scores(request, version_id: int, filters: Query[ScoreFilters]):
    """The version's score of each active image: highest loss first, by default.

    Follow ``next`` for more; no total is counted.
    """
    require_perm(request, "reviewapp.view_imagescore", "view image scores")
    version = version_or_404(version_id)
    scores = selectors.image_score_list(
        version=version,
        label=_category_id(version.project, "label", filters.label),
        predicted=_category_id(version.project, "predicted", filters.predicted),
        split=filters.split or "",
        order=filters.order,
    )
    page, next_url = page_of(
        request, scores, offset=filters.offset, limit=filters.limit, max_offset=SCORES_MAX_OFFSET
    )
    return {"items": [_score_out(request, version, s) for s in page], "next": next_url}


# Comparing two versions -------------------------------------------------------------


class MetricPairOut(Schema):
    name: str
    a: int | float | None
    b: int | float | None


class ClassErrorOut(Schema):
    name: str
    a_error: float | None = Field(description="Validation error rate of the class under A.")
    b_error: float | None
    a_support: int
    b_support: int
    change: float | None = Field(description="b_error - a_error; negative: B is better.")


class PredictionChangeOut(Schema):
    image_id: int
    label: str | None  # the image's label now
    a_predicted: str | None
    b_predicted: str | None
    a_confidence: float
    b_confidence: float


class ComparisonOut(Schema):
    a: ModelVersionOut
    b: ModelVersionOut
    metrics: list[MetricPairOut]
    classes: list[ClassErrorOut]
    n_changed: int = Field(description="Active images whose predicted class differs.")
    n_fixed: int = Field(description="Among ``changes``: wrong under A, right under B.")
    n_broken: int = Field(description="Among ``changes``: right under A, wrong under B.")
    changes: list[PredictionChangeOut]


def _name(category: Category | None) -> str | None:
    return category.name if category else None


@router.get(
    "/model-versions/{a_id}/compare/{b_id}",
    response={200: ComparisonOut, **ERROR_RESPONSES},
    tags=["models"],
)
def model_version_compare(
    request,
    a_id: int,
    b_id: int,
    limit: int = Query(CHANGES_DEFAULT_LIMIT, ge=1, le=CHANGES_MAX_LIMIT),
):
    """Two versions of a project side by side: metrics, per-class error, changed predictions.

    ``changes`` lists at most ``limit`` images, highest loss under A first.
    """
    require_perm(request, "reviewapp.view_modelversion", "view model versions")
    a, b = version_or_404(a_id), version_or_404(b_id)
    if a.project_id != b.project_id:
        raise ValidationError(
            f"Model versions {a.pk} ({a.project.slug} {a.label}) and {b.pk} "
            f"({b.project.slug} {b.label}) belong to different projects; compare two versions "
            "of one project."
        )
    comparison = selectors.model_version_compare(a=a, b=b, limit=limit)
    return {
        "a": model_version_out(request, a),
        "b": model_version_out(request, b),
        "metrics": [{"name": n, "a": va, "b": vb} for n, va, vb in comparison.metrics],
        "classes": [
            {
                "name": c.name,
                "a_error": c.a_error,
                "b_error": c.b_error,
                "a_support": c.a_support,
                "b_support": c.b_support,
                "change": c.change,
            }
            for c in comparison.classes
        ],
        "n_changed": comparison.n_changed,
        "n_fixed": comparison.n_fixed,
        "n_broken": comparison.n_broken,
        "changes": [
            {
                "image_id": c.image.pk,
                "label": _name(c.label),
                "a_predicted": _name(c.a.predicted),
                "b_predicted": _name(c.b.predicted),
                "a_confidence": c.a.confidence,
                "b_confidence": c.b.confidence,
            }
            for c in comparison.changes
        ],
    }
