"""Training runs and model versions: start, follow and cancel runs; read versions and scores."""

import json
from datetime import datetime
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404
from ninja import Field, Query, Router, Schema, Status
from pydantic import field_validator

from trainer import ARCHITECTURES, PRETRAINED_CHOICES, RESIZE_METHODS

from .. import model_files, selectors, serving, training
from ..models import Category, Image, ImageScore, ModelVersion, Project, TrainingRun
from .auth import require_perm
from .common import (
    InputSchema,
    PageQuery,
    absolute_reverse,
    api_enum,
    db_id,
    page_of,
    page_schema,
    project_or_404,
)
from .errors import ERROR_RESPONSES, QUEUE_RESPONSES

__all__ = ["model_version_out", "router", "training_run_out"]

router = Router()

RUNS_DEFAULT_LIMIT = 20
RUNS_MAX_LIMIT = 100
SCORES_DEFAULT_LIMIT = 100
SCORES_MAX_LIMIT = 1000
# Offset paging costs O(offset) in the database; past this, filter by label or split instead.
SCORES_MAX_OFFSET = 100_000
CHANGES_DEFAULT_LIMIT = 200
CHANGES_MAX_LIMIT = 1000


# Training runs ----------------------------------------------------------------------


class TrainingSettingsIn(InputSchema):
    """Training settings; each omitted one comes from the project's choices or CPU defaults.

    The trainer checks ranges; a value out of range is a 400 naming the setting.
    """

    architecture: Literal[ARCHITECTURES] | None = None
    image_size: int | None = None
    resize_method: Literal[RESIZE_METHODS] | None = None
    augment: bool | None = None
    epochs: int | None = None
    freeze_epochs: int | None = None
    learning_rate: float | None = Field(
        None, description="Omitted: the default; null: use the learning-rate finder."
    )
    batch_size: int | None = None
    seed: int | None = None
    pretrained: Literal[PRETRAINED_CHOICES] | None = Field(
        None, description="auto: use cached ImageNet weights when present."
    )
    min_scale: float | None = None
    do_flip: bool | None = None
    flip_vert: bool | None = None
    max_rotate: float | None = None
    max_zoom: float | None = None
    max_lighting: float | None = None
    max_warp: float | None = None


RunStatus = api_enum(TrainingRun.Status, "TrainingRunStatus")
RunPhase = api_enum(TrainingRun.Phase, "TrainingRunPhase")
RunTrigger = api_enum(TrainingRun.Trigger, "TrainingRunTrigger")


class ProgressOut(Schema):
    done: int
    total: int
    percent: int


class EpochOut(Schema):
    epoch: int
    phase: str  # "frozen" or "unfrozen"
    train_loss: float | None
    valid_loss: float | None
    error_rate: float | None
    accuracy: float | None


class TrainingRunOut(Schema):
    id: int
    project: str  # the project's slug
    status: RunStatus
    phase: RunPhase
    progress: ProgressOut = Field(description="Of the current phase (training, then scoring).")
    cancel_requested: bool
    trigger: RunTrigger = Field(description="What started it: manual, retrain, policy, ...")
    reason: str = Field(description='Why, e.g. "policy: 57 review decisions since v3".')
    config: dict[str, Any]
    epochs: list[EpochOut]
    n_images: int
    snapshot_sha256: str
    error_message: str
    created_by: str | None  # username
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    version_id: int | None = Field(description="The model version it trained; null until then.")
    url: str | None


def training_run_out(request, run: TrainingRun) -> dict:
    version = getattr(run, "version", None)  # reverse one-to-one: absent until trained
    succeeded = run.status == TrainingRun.Status.SUCCEEDED
    return {
        "id": run.pk,
        "project": run.project.slug,
        "status": run.status,
        "phase": run.phase,
        "progress": {
            "done": run.progress_done,
            "total": run.progress_total,
            "percent": run.progress_percent,
        },
        "cancel_requested": run.cancel_requested,
        "trigger": run.trigger,
        "reason": run.reason,
        "config": run.config,
        "epochs": run.epochs,
        "n_images": run.n_images,
        "snapshot_sha256": run.snapshot_sha256,
        "error_message": run.error_message,
        "created_by": run.created_by.get_username() if run.created_by else None,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        # While scoring, the version exists but is not finished; it counts once the run is.
        "version_id": version.pk if version and succeeded else None,
        "url": absolute_reverse(request, "training-run", pk=run.pk),
    }


def _run_or_404(run_id: int) -> TrainingRun:
    """The run, read after failing it if its worker died; never its (large) data snapshot."""

    def fetch() -> TrainingRun | None:
        return (
            TrainingRun.objects.defer("snapshot")
            .select_related("project", "created_by", "version")
            .filter(pk=db_id(run_id))
            .first()
        )

    run = fetch()
    if run is None:
        raise Http404(f"No training run {run_id}.")
    if training.training_runs_reap(project=run.project):
        run = fetch()
    return run


@router.post(
    "/projects/{slug}/training-runs",
    response={201: TrainingRunOut, **ERROR_RESPONSES, **QUEUE_RESPONSES},
    tags=["training"],
)
def training_run_start(request, slug: str, payload: TrainingSettingsIn = None):
    """Queue a training run of the project's labeled images; it waits behind any other run.

    The body is optional: every setting left out comes from the project or the defaults.
    """
    require_perm(request, "reviewapp.add_trainingrun", "start training runs")
    project = project_or_404(slug)
    config = payload.dict(exclude_unset=True) if payload else {}
    run = training.training_run_create(
        project=project,
        actor=request.auth,
        config=config,
        trigger=TrainingRun.Trigger.API,
        fail_if_unqueued=True,
    )
    return Status(201, training_run_out(request, run))


class RunPageQuery(PageQuery):
    limit: int = Field(RUNS_DEFAULT_LIMIT, ge=1, le=RUNS_MAX_LIMIT)


TrainingRunPageOut = page_schema(TrainingRunOut, "TrainingRunPageOut")


@router.get(
    "/projects/{slug}/training-runs",
    response={200: TrainingRunPageOut, **ERROR_RESPONSES},
    tags=["training"],
)
def training_run_list(request, slug: str, paging: Query[RunPageQuery]):
    """The project's training runs, newest first; follow ``next`` for older ones."""
    require_perm(request, "reviewapp.view_trainingrun", "view training runs")
    project = project_or_404(slug)
    training.training_runs_reap(project=project)
    runs, next_url = page_of(
        request,
        selectors.training_run_queryset(project=project),
        offset=paging.offset,
        limit=paging.limit,
    )
    for run in runs:
        run.project = project  # one project for the list: no query per run
    return {"items": [training_run_out(request, run) for run in runs], "next": next_url}


@router.get(
    "/training-runs/{run_id}", response={200: TrainingRunOut, **ERROR_RESPONSES}, tags=["training"]
)
def training_run_detail(request, run_id: int):
    """One run: status, phase, progress, per-epoch metrics and, once trained, its version."""
    require_perm(request, "reviewapp.view_trainingrun", "view training runs")
    return training_run_out(request, _run_or_404(run_id))


@router.post(
    "/training-runs/{run_id}/cancel",
    response={200: TrainingRunOut, **ERROR_RESPONSES},
    tags=["training"],
)
def training_run_cancel(request, run_id: int):
    """Cancel a queued run at once; a running one stops after its current batch.

    A running run answers with ``cancel_requested`` true until its worker has stopped.
    """
    require_perm(request, "reviewapp.change_trainingrun", "cancel training runs")
    run = _run_or_404(run_id)
    training.training_run_cancel(run=run, actor=request.auth)
    return training_run_out(request, _run_or_404(run_id))


# Model versions ---------------------------------------------------------------------


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


def _version_or_404(version_id: int) -> ModelVersion:
    version = ModelVersion.objects.select_related("project").filter(pk=db_id(version_id)).first()
    if version is None:
        raise Http404(f"No model version {version_id}.")
    return version


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
    version = _version_or_404(version_id)
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
        found = model_files.onnx_download(version=_version_or_404(version_id))
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
        _, text = model_files.onnx_spec_download(version=_version_or_404(version_id))
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
    version = _version_or_404(version_id)
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
    a, b = _version_or_404(a_id), _version_or_404(b_id)
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
