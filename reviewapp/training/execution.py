"""What a worker does with a run: claim it, freeze its data, train, store and score the version."""

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from .. import model_files
from ..models import Image, LabelEvent, ModelVersion, Project, TrainingRun
from . import scoring
from .announce import run_announce
from .liveness import Heartbeat, fail_dead, training_runs_reap
from .outputs import discard, output_dir, relative
from .progress import Progress


class RunOutcome:
    """What one delivery of the training task did."""

    DONE = "done"  # ran to an end: succeeded, failed or cancelled
    SKIPPED = "skipped"  # not pending: a redelivered or cancelled message
    BUSY = "busy"  # another run of the project is running; try again later


def _claim(run_id: int, worker: str, redelivered: bool) -> str:
    """Move a pending run to running, unless another run of its project is running."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return RunOutcome.SKIPPED
        if run.status == TrainingRun.Status.RUNNING and redelivered:
            # acks_late + reject_on_worker_lost: the process running it died.
            fail_dead(
                [run],
                "The worker process running this training stopped unexpectedly (killed, or "
                "out of memory?). Start the run again, perhaps with a smaller batch size.",
            )
            return RunOutcome.SKIPPED
        if run.status != TrainingRun.Status.PENDING:
            return RunOutcome.SKIPPED
        # Lock the project so two workers cannot both start a run of it.
        Project.objects.select_for_update().filter(pk=run.project_id).first()
        busy = (
            TrainingRun.objects.filter(project_id=run.project_id, status=TrainingRun.Status.RUNNING)
            .exclude(pk=run.pk)
            .exists()
        )
        if busy:
            return RunOutcome.BUSY
        now = timezone.now()
        run.status = TrainingRun.Status.RUNNING
        run.phase = TrainingRun.Phase.PREPARING
        run.worker = worker
        run.started_at = run.phase_started_at = run.heartbeat_at = now
        run.save()
    return "claimed"


def _snapshot(run: TrainingRun) -> list[tuple[str, str, str]]:
    """Freeze the project's labeled active images into the run; returns trainer items."""
    rows = list(
        Image.objects.filter(
            project_id=run.project_id, status=Image.Status.ACTIVE, label__isnull=False
        )
        .order_by("id")
        .values_list("id", "label__name", "split", "file")
    )
    snapshot = [[pk, label, split] for pk, label, split, _ in rows]
    run.snapshot = snapshot
    run.snapshot_sha256 = hashlib.sha256(
        json.dumps(snapshot, separators=(",", ":")).encode()
    ).hexdigest()
    run.n_images = len(snapshot)
    run.review_decisions = _decisions_since_last_run(run)
    run.save(update_fields=["snapshot", "snapshot_sha256", "n_images", "review_decisions"])
    media = Path(settings.MEDIA_ROOT)
    return [(str(media / name), label, split) for _, label, split, name in rows]


def _decisions_since_last_run(run: TrainingRun) -> int:
    """Standing review decisions made since the previous successful run froze its data."""
    previous = (
        TrainingRun.objects.filter(
            project_id=run.project_id, status=TrainingRun.Status.SUCCEEDED, pk__lt=run.pk
        )
        .order_by("-pk")
        .values_list("started_at", flat=True)
        .first()
    )
    decisions = LabelEvent.objects.filter(
        project_id=run.project_id, action__in=LabelEvent.DECISIONS, undone_by__isnull=True
    )
    if previous is not None:
        decisions = decisions.filter(created_at__gte=previous)
    return decisions.count()


def _finish(run_id: int, status: str, message: str = "") -> None:
    TrainingRun.objects.filter(pk=run_id).update(
        status=status,
        phase=TrainingRun.Phase.DONE,
        error_message=message,
        finished_at=timezone.now(),
    )
    run_announce(run_id=run_id)


def training_run_execute(
    *,
    run_id: int,
    worker: str = "inline",
    redelivered: bool = False,
    on_progress: Callable[[TrainingRun], None] | None = None,
) -> str:
    """Train, store the version, score every image; a run not pending is left alone."""
    from trainer import ConfigError, TrainingCancelled, TrainingError

    training_runs_reap()
    claimed = _claim(run_id, worker, redelivered)
    if claimed != "claimed":
        return claimed
    run = TrainingRun.objects.select_related("project").get(pk=run_id)
    progress = Progress(run_id, echo=on_progress)
    run_dir = output_dir(run.pk, run.project_id)
    try:
        with Heartbeat(run_id, settings.LOUPE_TRAINING_HEARTBEAT_SECONDS):
            items = _snapshot(run)
            weights = _pretrained_weights(run, progress)
            result = _train(run, items, run_dir, progress, weights)
            version = _version_create(run, result)
            scoring.version_score(version, run, progress)
            scoring.version_suggest(version, progress)
    except TrainingCancelled:
        discard(run)
        asked = TrainingRun.objects.values_list("error_message", flat=True).get(pk=run_id)
        _finish(run_id, TrainingRun.Status.CANCELLED, asked or "Cancelled while training.")
        return RunOutcome.DONE
    except (TrainingError, ConfigError) as exc:
        discard(run)
        _finish(run_id, TrainingRun.Status.FAILED, str(exc))
        return RunOutcome.DONE
    except _soft_time_limit() as exc:
        discard(run)
        _finish(
            run_id,
            TrainingRun.Status.FAILED,
            f"Training took longer than the limit of {settings.LOUPE_TRAINING_SOFT_TIME_LIMIT}s "
            f"(LOUPE_TRAINING_SOFT_TIME_LIMIT) and was stopped. Try fewer epochs or a smaller "
            f"image size. ({type(exc).__name__})",
        )
        return RunOutcome.DONE
    except Exception as exc:
        discard(run)
        _finish(run_id, TrainingRun.Status.FAILED, f"Unexpected error: {type(exc).__name__}: {exc}")
        raise
    _finish(run_id, TrainingRun.Status.SUCCEEDED)
    return RunOutcome.DONE


def _soft_time_limit() -> type[BaseException]:
    from celery.exceptions import SoftTimeLimitExceeded

    return SoftTimeLimitExceeded


def _pretrained_weights(run: TrainingRun, progress: Progress):
    """The run's ImageNet weights from the store, or downloaded as a phase of its own."""
    from trainer import TrainingCancelled

    from ..backbones import pretrained_weights_for

    downloading = False

    def started() -> None:
        nonlocal downloading
        downloading = True
        progress.phase(TrainingRun.Phase.DOWNLOADING, 0)

    def received(done: int, total: int) -> None:
        TrainingRun.objects.filter(pk=run.pk).update(progress_done=done, progress_total=total)
        progress.told()
        if progress.should_stop():
            raise TrainingCancelled("Cancelled while downloading the weights.")

    weights = pretrained_weights_for(run.config, on_download_start=started, on_progress=received)
    if downloading:
        progress.phase(TrainingRun.Phase.PREPARING, 0)
    return weights


def _train(run: TrainingRun, items, run_dir: Path, progress: Progress, weights=None):
    from trainer import TrainConfig, train

    config = TrainConfig.from_dict(run.config)
    return train(
        items,
        config,
        output_dir=run_dir,
        on_progress=progress.training,
        should_stop=progress.should_stop,
        weights=weights,
        onnx=settings.LOUPE_ONNX_EXPORT,
    )


@transaction.atomic
def _version_create(run: TrainingRun, result) -> ModelVersion:
    Project.objects.select_for_update().filter(pk=run.project_id).first()
    number = (
        ModelVersion.objects.filter(project_id=run.project_id).aggregate(n=Max("number"))["n"] or 0
    ) + 1
    return ModelVersion.objects.create(
        project_id=run.project_id,
        number=number,
        run=run,
        export_file=relative(result.export_path),
        export_sha256=result.sha256[result.export_path.name],
        weights_file=relative(result.weights_path),
        weights_sha256=result.sha256[result.weights_path.name],
        config=run.config,
        vocab=result.vocab,
        metrics=result.metrics_dict(),
        confusion_matrix=result.confusion_matrix,
        pretrained=result.pretrained,
        pretrained_note=result.pretrained_note[:255],
        snapshot_sha256=run.snapshot_sha256,
        **model_files.onnx_fields(result.onnx),
    )
