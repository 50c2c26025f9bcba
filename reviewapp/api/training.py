"""Training runs: start, follow and cancel them; the versions they make are in ``versions``."""

from datetime import datetime
from typing import Any, Literal

from django.http import Http404
from ninja import Field, Query, Router, Schema, Status

from trainer import ARCHITECTURES, PRETRAINED_CHOICES, RESIZE_METHODS

from .. import selectors, training
from ..models import TrainingRun
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

__all__ = ["router", "training_run_out"]

router = Router()

RUNS_DEFAULT_LIMIT = 20
RUNS_MAX_LIMIT = 100


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
