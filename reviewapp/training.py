"""Training runs and model versions: the adapter between ``trainer/`` and the database.

The trainer takes paths and labels and knows nothing of Django; this module freezes a
project's data into a run, feeds it to the trainer, and stores what comes back.
"""

import hashlib
import json
import logging
import math
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from . import enqueue as jobs
from . import events, model_files, notifications
from .models import Category, Image, ImageScore, LabelEvent, ModelVersion, Project, TrainingRun

__all__ = [
    "last_successful_config",
    "run_announce",
    "CPU_DEFAULTS",
    "RunOutcome",
    "train_config_for",
    "training_run_cancel",
    "training_run_create",
    "training_run_execute",
    "training_runs_reap",
    "training_runs_reap_worker",
]

logger = logging.getLogger(__name__)

# Settings a run may override; the rest come from the project's DataBlock choices.
CONFIG_FIELDS = (
    "architecture",
    "image_size",
    "resize_method",
    "augment",
    "epochs",
    "freeze_epochs",
    "learning_rate",
    "batch_size",
    "seed",
    "pretrained",
    "min_scale",
    "do_flip",
    "flip_vert",
    "max_rotate",
    "max_zoom",
    "max_lighting",
    "max_warp",
)
# A run started without choices: small enough to finish in minutes on a laptop's CPU.
CPU_DEFAULTS = {"architecture": "resnet18", "epochs": 3, "freeze_epochs": 1, "batch_size": 32}
SCORE_CHUNK = 500
# An image is flagged for review when the model predicts another class, or gives its
# label less than even odds (loss above ln 2).
FLAG_LOSS = math.log(2)


class RunOutcome:
    """What one delivery of the training task did."""

    DONE = "done"  # ran to an end: succeeded, failed or cancelled
    SKIPPED = "skipped"  # not pending: a redelivered or cancelled message
    BUSY = "busy"  # another run of the project is running; try again later


def train_config_for(project: Project, overrides: dict[str, Any] | None = None):
    """The TrainConfig for ``project``: its DataBlock choices, CPU defaults, then overrides."""
    from trainer import ConfigError, TrainConfig

    values: dict[str, Any] = {
        **CPU_DEFAULTS,
        "image_size": project.image_size,
        "resize_method": project.resize_method,
        "augment": project.augment,
        "seed": project.split_seed,
    }
    unknown = set(overrides or {}) - set(CONFIG_FIELDS)
    if unknown:
        raise ValidationError({name: "Not a training setting." for name in sorted(unknown)})
    # None means "the default", except for the learning rate, where it means "lr finder".
    values.update(
        {k: v for k, v in (overrides or {}).items() if v is not None or k == "learning_rate"}
    )
    try:
        return TrainConfig(**values)
    except ConfigError as exc:
        field = next((name for name in CONFIG_FIELDS if str(exc).startswith(name)), None)
        raise ValidationError({field: str(exc)} if field else str(exc)) from None
    except TypeError as exc:
        raise ValidationError(f"A training setting has the wrong type: {exc}") from None


def _trainable_counts(project: Project) -> dict[str, dict[str, int]]:
    rows = (
        Image.objects.filter(project=project, status=Image.Status.ACTIVE, label__isnull=False)
        .values_list("label__name", "split")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: dict[str, dict[str, int]] = {}
    for name, split, n in rows:
        counts.setdefault(name, {"train": 0, "valid": 0})[split] += n
    return counts


def _check_trainable(project: Project) -> None:
    counts = _trainable_counts(project)
    if len(counts) < 2:
        raise ValidationError(
            f"Training needs labeled images in at least two classes; this project has "
            f"{len(counts)}. Upload or label more images first."
        )
    train = sum(c["train"] for c in counts.values())
    valid = sum(c["valid"] for c in counts.values())
    if not train or not valid:
        raise ValidationError(
            f"Training needs labeled images in both splits (train: {train}, valid: {valid}). "
            "Add images or change the validation share in the project's settings."
        )


@transaction.atomic
def training_run_create(
    *,
    project: Project,
    actor=None,
    config: dict[str, Any] | None = None,
    enqueue: bool = True,
    trigger: str = TrainingRun.Trigger.MANUAL,
    reason: str = "",
    then_audit: str = "",
    then_shadow: bool = False,
    fail_if_unqueued: bool = False,
) -> TrainingRun:
    """Queue a training run; it waits behind any run of the same project.

    ``fail_if_unqueued``: someone is waiting, so a broker that refuses the job fails the
    run and raises ``enqueue.QueueUnavailable``; otherwise the reaper sends it again.
    """
    train_config = train_config_for(project, config)
    _check_trainable(project)
    run = TrainingRun.objects.create(
        project=project,
        created_by=actor,
        config=train_config.to_dict(),
        trigger=trigger,
        reason=reason[:300],
        then_audit=then_audit,
        then_shadow=then_shadow,
    )
    if enqueue and fail_if_unqueued:
        jobs.send_or_fail(
            jobs.TRAINING_RUN, run.pk, on_failure=lambda message: _fail_unqueued(run.pk, message)
        )
    elif enqueue:
        jobs.send(jobs.TRAINING_RUN, run.pk)
    return run


def _fail_unqueued(run_id: int, message: str) -> None:
    # Not announced: the person is told by the answer, and the broker is down anyway.
    TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.PENDING).update(
        status=TrainingRun.Status.FAILED,
        phase=TrainingRun.Phase.DONE,
        error_message=message,
        finished_at=timezone.now(),
    )


def last_successful_config(project: Project) -> dict[str, Any]:
    """The settings of the project's last successful run: what a retrain trains with."""
    last = project.training_runs.filter(status=TrainingRun.Status.SUCCEEDED).order_by("-id").first()
    return {k: v for k, v in (last.config if last else {}).items() if k in CONFIG_FIELDS}


def training_run_cancel(*, run: TrainingRun, actor=None) -> TrainingRun:
    """Cancel a queued run at once; ask a running one to stop after its current batch."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.is_finished:
            raise ValidationError(f"Run {run.pk} has already {run.get_status_display().lower()}.")
        if run.status == TrainingRun.Status.PENDING:
            run.status = TrainingRun.Status.CANCELLED
            run.phase = TrainingRun.Phase.DONE
            run.finished_at = timezone.now()
            run.error_message = _who(actor, "Cancelled before it started")
        else:
            run.cancel_requested = True
            run.error_message = _who(actor, "Cancelled while training")
        run.save()
    return run


def _who(actor, text: str) -> str:
    return f"{text} by {actor.get_username()}." if actor else f"{text}."


# Runs whose worker died --------------------------------------------------------------


def _heartbeat_timeout() -> timedelta:
    return timedelta(seconds=settings.LOUPE_TRAINING_HEARTBEAT_TIMEOUT)


def _fail_dead(runs, message: str) -> int:
    now = timezone.now()
    failed = 0
    for run in runs:
        marked = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(
            status=TrainingRun.Status.FAILED,
            phase=TrainingRun.Phase.DONE,
            error_message=message,
            finished_at=now,
        )
        if marked:
            _discard(run)
            run_announce(run_id=run.pk)
        failed += marked
    return failed


def run_announce(*, run_id: int) -> None:
    """Tell who started a run how it ended, approvers of a new version, and the webhooks."""
    run = (
        TrainingRun.objects.select_related("project", "created_by").defer("snapshot").get(pk=run_id)
    )
    project = run.project
    data = {
        "run_id": run.pk,
        "status": run.status,
        "trigger": run.trigger,
        "reason": run.reason,
        "error_message": run.error_message,
    }
    link = run.get_absolute_url()
    if run.status == TrainingRun.Status.SUCCEEDED:
        version = ModelVersion.objects.filter(run=run).first()
        if version is not None:
            data.update(version_id=version.pk, version=version.number, accuracy=version.accuracy)
        said = f" as {version.label}" if version is not None else ""
        if version is not None and version.accuracy is not None:
            said += f", validation accuracy {version.accuracy:.1%}"
        events.emit(
            "run.succeeded",
            project=project,
            data=data,
            message=f"{project.name}: run #{run.pk} succeeded{said}.",
            link=link,
            users=[run.created_by],
        )
        if version is not None:
            notifications.notify(
                notifications.approvers(project=project),
                kind="version.awaiting_approval",
                message=f"{project.name}: {version.label} awaits your approval.",
                link=version.get_absolute_url(),
                project=project,
            )
    elif run.status == TrainingRun.Status.FAILED:
        events.emit(
            "run.failed",
            project=project,
            data=data,
            message=f"{project.name}: run #{run.pk} failed: {run.error_message[:200]}",
            link=link,
            users=[run.created_by],
        )


def training_runs_reap(*, project: Project | None = None) -> int:
    """Mark failed every running run whose worker stopped sending heartbeats."""
    stale = TrainingRun.objects.filter(
        status=TrainingRun.Status.RUNNING, heartbeat_at__lt=timezone.now() - _heartbeat_timeout()
    )
    if project is not None:
        stale = stale.filter(project=project)
    stale = list(stale.only("pk", "project_id", "heartbeat_at"))
    for run in stale:
        seen = timezone.localtime(run.heartbeat_at).strftime("%Y-%m-%d %H:%M:%S")
        _fail_dead(
            [run],
            f"The worker running this training stopped (last sign of life at {seen}); it may "
            "have been killed or run out of memory. Start the run again.",
        )
    return len(stale)


def training_runs_reap_worker(*, worker: str) -> int:
    """A worker that just started runs nothing yet: its 'running' runs died with it."""
    runs = list(
        TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, worker=worker).only(
            "pk", "project_id"
        )
    )
    return _fail_dead(
        runs,
        f"The worker {worker} restarted while running this training; it may have been "
        "killed or run out of memory. Start the run again.",
    )


# Executing a run ---------------------------------------------------------------------


def _output_dir(run_pk: int, project_id: int) -> Path:
    return Path(settings.MEDIA_ROOT) / "models" / str(project_id) / f"run-{run_pk}"


def _remove_output(run_pk: int, project_id: int) -> None:
    shutil.rmtree(_output_dir(run_pk, project_id), ignore_errors=True)


def _claim(run_id: int, worker: str, redelivered: bool) -> str:
    """Move a pending run to running, unless another run of its project is running."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return RunOutcome.SKIPPED
        if run.status == TrainingRun.Status.RUNNING and redelivered:
            # acks_late + reject_on_worker_lost: the process running it died.
            _fail_dead(
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


class _Heartbeat:
    """A thread that tells the database every few seconds that this run is alive."""

    def __init__(self, run_id: int, every: float):
        self.run_id, self.every = run_id, every
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-run-{run_id}")
        self.thread.daemon = True

    def _beat(self):
        try:
            while not self.stopped.wait(self.every):
                TrainingRun.objects.filter(pk=self.run_id).update(heartbeat_at=timezone.now())
        except Exception:  # a beat is best-effort; the main thread reports real failures
            logger.exception("Heartbeat of run %s stopped", self.run_id)
        finally:
            connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(timeout=30)


@dataclass
class _Progress:
    """Writes progress to the run at most every ``interval`` seconds, and every epoch."""

    run_id: int
    interval: float = 0.5
    last_write: float = 0.0
    echo: Callable[[TrainingRun], None] | None = None  # told after each write
    training_started: bool = False

    def told(self) -> None:
        if self.echo is not None:
            self.echo(TrainingRun.objects.defer("snapshot").get(pk=self.run_id))

    def phase(self, phase: str, total: int) -> None:
        now = timezone.now()
        TrainingRun.objects.filter(pk=self.run_id).update(
            phase=phase, progress_done=0, progress_total=total, phase_started_at=now
        )
        self.told()

    def training(self, done: int, total: int, info: dict) -> None:
        if not self.training_started:
            # The first batch: until now the DataBlock was being built and the count unknown.
            self.training_started = True
            self.phase(TrainingRun.Phase.TRAINING, total)
        now = time.monotonic()
        epoch = info.get("epoch")
        if epoch is None and now - self.last_write < self.interval and done < total:
            return
        self.last_write = now
        fields: dict[str, Any] = {"progress_done": done, "progress_total": total}
        if epoch is not None:
            run = TrainingRun.objects.only("epochs").get(pk=self.run_id)
            fields["epochs"] = [*run.epochs, epoch]
        TrainingRun.objects.filter(pk=self.run_id).update(**fields)
        self.told()

    def count(self, done: int, *, force: bool = False) -> None:
        """How many of the phase's items are done, written at most every ``interval``."""
        now = time.monotonic()
        if not force and now - self.last_write < self.interval:
            return
        self.last_write = now
        TrainingRun.objects.filter(pk=self.run_id).update(progress_done=done)
        self.told()

    def should_stop(self) -> bool:
        return TrainingRun.objects.filter(pk=self.run_id, cancel_requested=True).exists()


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
    progress = _Progress(run_id, echo=on_progress)
    output_dir = _output_dir(run.pk, run.project_id)
    try:
        with _Heartbeat(run_id, settings.LOUPE_TRAINING_HEARTBEAT_SECONDS):
            items = _snapshot(run)
            weights = _pretrained_weights(run, progress)
            result = _train(run, items, output_dir, progress, weights)
            version = _version_create(run, result, output_dir)
            _version_score(version, run, progress)
            _version_suggest(version, progress)
    except TrainingCancelled:
        _discard(run)
        asked = TrainingRun.objects.values_list("error_message", flat=True).get(pk=run_id)
        _finish(run_id, TrainingRun.Status.CANCELLED, asked or "Cancelled while training.")
        return RunOutcome.DONE
    except (TrainingError, ConfigError) as exc:
        _discard(run)
        _finish(run_id, TrainingRun.Status.FAILED, str(exc))
        return RunOutcome.DONE
    except _soft_time_limit() as exc:
        _discard(run)
        _finish(
            run_id,
            TrainingRun.Status.FAILED,
            f"Training took longer than the limit of {settings.LOUPE_TRAINING_SOFT_TIME_LIMIT}s "
            f"(LOUPE_TRAINING_SOFT_TIME_LIMIT) and was stopped. Try fewer epochs or a smaller "
            f"image size. ({type(exc).__name__})",
        )
        return RunOutcome.DONE
    except Exception as exc:
        _discard(run)
        _finish(run_id, TrainingRun.Status.FAILED, f"Unexpected error: {type(exc).__name__}: {exc}")
        raise
    _finish(run_id, TrainingRun.Status.SUCCEEDED)
    return RunOutcome.DONE


def _discard(run: TrainingRun) -> None:
    """Remove what an unfinished run made: its files, and a version still being scored."""
    ModelVersion.objects.filter(run_id=run.pk).delete()
    _remove_output(run.pk, run.project_id)


def _soft_time_limit() -> type[BaseException]:
    from celery.exceptions import SoftTimeLimitExceeded

    return SoftTimeLimitExceeded


def _version_suggest(version: ModelVersion, progress: _Progress) -> None:
    """Suggest labels for the project's unlabeled images: the Label queue's cards."""
    from trainer import TrainingCancelled

    from .labeling import suggestions_score

    def told(done: int, total: int) -> None:
        if done == 0:
            progress.phase(TrainingRun.Phase.SUGGESTING, total)
        else:
            TrainingRun.objects.filter(pk=progress.run_id).update(progress_done=done)
            progress.told()

    suggestions_score(version=version, on_progress=told, should_stop=progress.should_stop)
    if progress.should_stop():
        raise TrainingCancelled("Cancelled while suggesting labels.")


def _pretrained_weights(run: TrainingRun, progress: _Progress):
    """The run's ImageNet weights from the store, or downloaded as a phase of its own."""
    from trainer import TrainingCancelled

    from .backbones import pretrained_weights_for

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


def _train(run: TrainingRun, items, output_dir: Path, progress: _Progress, weights=None):
    from trainer import TrainConfig, train

    config = TrainConfig.from_dict(run.config)
    return train(
        items,
        config,
        output_dir=output_dir,
        on_progress=progress.training,
        should_stop=progress.should_stop,
        weights=weights,
        onnx=settings.LOUPE_ONNX_EXPORT,
    )


def _relative(path: Path) -> str:
    return str(Path(path).resolve().relative_to(Path(settings.MEDIA_ROOT).resolve()))


@transaction.atomic
def _version_create(run: TrainingRun, result, output_dir: Path) -> ModelVersion:
    Project.objects.select_for_update().filter(pk=run.project_id).first()
    number = (
        ModelVersion.objects.filter(project_id=run.project_id).aggregate(n=Max("number"))["n"] or 0
    ) + 1
    return ModelVersion.objects.create(
        project_id=run.project_id,
        number=number,
        run=run,
        export_file=_relative(result.export_path),
        export_sha256=result.sha256[result.export_path.name],
        weights_file=_relative(result.weights_path),
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


def _version_score(version: ModelVersion, run: TrainingRun, progress: _Progress) -> None:
    """Score every active labeled image with the new version, in chunks."""
    from trainer import TrainingCancelled, iter_scores

    media = Path(settings.MEDIA_ROOT)
    trained_on = {pk for pk, _, split in run.snapshot if split == Image.Split.TRAIN}
    rows = list(
        Image.objects.filter(
            project_id=version.project_id, status=Image.Status.ACTIVE, label__isnull=False
        )
        .order_by("id")
        .values_list("id", "label_id", "label__name", "split", "file")
    )
    categories = {c.name: c.pk for c in Category.objects.filter(project_id=version.project_id)}
    progress.phase(TrainingRun.Phase.SCORING, len(rows))
    scores = iter_scores(
        version.artifact_path(),
        ((str(media / name), label) for _, _, label, _, name in rows),
        expected_sha256=version.export_sha256,
    )
    batch: list[ImageScore] = []
    done = 0
    for seen, ((pk, label_id, _, split, _), item) in enumerate(
        zip(rows, scores, strict=True), start=1
    ):
        predicted_id = categories.get(item.predicted)
        batch.append(
            ImageScore(
                version=version,
                image_id=pk,
                label_id=label_id,
                predicted_id=predicted_id,
                confidence=item.confidence,
                loss=item.loss,
                probabilities=item.probabilities,
                split=split,
                in_training=pk in trained_on,
                flagged=predicted_id != label_id or (item.loss or 0.0) > FLAG_LOSS,
            )
        )
        if len(batch) >= SCORE_CHUNK:
            done += _flush(batch)
            if progress.should_stop():
                raise TrainingCancelled("Cancelled while scoring.")
        # Counted as scored, before a chunk is written: the page moves while a chunk fills.
        progress.count(seen)
    done += _flush(batch)
    progress.count(done, force=True)
    ModelVersion.objects.filter(pk=version.pk).update(
        n_scored=done, flag_counts=flag_counts(ImageScore.objects.filter(version=version))
    )


def flag_counts(scores) -> list[list]:
    """A version's flagged scores as [label id, predicted id, split, count] rows, which the
    review progress adds up under any class/split filter (scores never change)."""
    rows = (
        scores.filter(flagged=True)
        .values_list("label_id", "predicted_id", "split")
        .annotate(n=Count("id"))
        .order_by("label_id", "predicted_id", "split")
    )
    return [list(row) for row in rows]


def _flush(batch: list[ImageScore]) -> int:
    n = len(batch)
    if n:
        ImageScore.objects.bulk_create(batch, batch_size=SCORE_CHUNK)
        batch.clear()
    return n
