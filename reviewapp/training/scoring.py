"""What a new version says of the project's images: scores of the labeled ones, flags for
review, and label suggestions for the unlabeled ones (the Label queue's cards)."""

import math
from pathlib import Path

from django.conf import settings
from django.db.models import Count

from ..models import Category, Image, ImageScore, ModelVersion, TrainingRun
from .progress import Progress

SCORE_CHUNK = 500
# An image is flagged for review when the model predicts another class, or gives its
# label less than even odds (loss above ln 2).
FLAG_LOSS = math.log(2)


def version_score(version: ModelVersion, run: TrainingRun, progress: Progress) -> None:
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


def version_suggest(version: ModelVersion, progress: Progress) -> None:
    """Suggest labels for the project's unlabeled images: the Label queue's cards."""
    from trainer import TrainingCancelled

    from ..labeling import suggestions_score

    def told(done: int, total: int) -> None:
        if done == 0:
            progress.phase(TrainingRun.Phase.SUGGESTING, total)
        else:
            TrainingRun.objects.filter(pk=progress.run_id).update(progress_done=done)
            progress.told()

    suggestions_score(version=version, on_progress=told, should_stop=progress.should_stop)
    if progress.should_stop():
        raise TrainingCancelled("Cancelled while suggesting labels.")
