"""The focus view's reads: one image, its score's probability for every class, its history."""

from dataclasses import dataclass

from django.http import Http404

from .models import Category, Image, ImageScore, LabelEvent, ModelVersion, Project, Suggestion
from .second_opinion import attach_pending
from .selectors import mark_undone

__all__ = ["ClassBar", "Focus", "image_focus"]

HISTORY_LIMIT = 20  # the newest decisions; the image page lists them all


@dataclass(frozen=True)
class ClassBar:
    name: str
    probability: float | None  # None: the model version does not know this class
    hotkey: str = ""
    is_label: bool = False
    is_predicted: bool = False


@dataclass
class Focus:
    image: Image
    score: ImageScore | None  # the version's score of the image; None: not scored by it
    version: ModelVersion | None
    categories: list[Category]
    bars: list[ClassBar]
    history: list[LabelEvent]  # newest first, after the import, undone ones marked
    # An unlabeled image has no score but the version's suggestion (reviewapp.labeling).
    suggestion: Suggestion | None = None


def class_bars(
    *,
    score: ImageScore | Suggestion | None,
    version: ModelVersion | None,
    categories: list[Category],
    label_id: int | None,
) -> list[ClassBar]:
    """Every class's probability, highest first; classes the version never saw come last."""
    vocab = list(version.vocab) if version is not None and score is not None else []
    probabilities = dict(zip(vocab, score.probabilities if score else [], strict=False))
    predicted = score.predicted_id if score is not None else None
    bars = [
        ClassBar(
            name=c.name,
            probability=probabilities.pop(c.name, None),
            hotkey=c.hotkey,
            is_label=c.pk == label_id,
            is_predicted=c.pk == predicted,
        )
        for c in categories
    ]
    # Classes of the version since renamed or merged away still had their share.
    bars += [ClassBar(name=name, probability=p) for name, p in probabilities.items()]
    return sorted(bars, key=lambda bar: 1.0 if bar.probability is None else -bar.probability)


def image_focus(*, project: Project, image_id: int, version: ModelVersion | None) -> Focus:
    """The focus view of image ``image_id`` of ``project``; 404 for another project's image.

    Four indexed queries whatever the project's size: the image, its classes, its one score
    (unique on version and image; else its one suggestion) and its newest events; one more
    under the second-opinion rule, for a relabel of it that waits.
    """
    image = Image.objects.select_related("label").filter(pk=image_id, project=project).first()
    if image is None:
        raise Http404(f"No image {image_id} in project '{project.slug}'.")
    image.project = project
    if project.second_opinion:
        attach_pending([image])  # a relabel of it waiting for a second reviewer
    categories = list(project.categories.all())
    score = suggestion = None
    if version is not None:
        score = (
            ImageScore.objects.filter(version=version, image_id=image.pk)
            .select_related("label", "predicted")
            .first()
        )
        if score is not None:
            score.image = image
        else:
            suggestion = (
                Suggestion.objects.filter(version=version, image_id=image.pk)
                .select_related("predicted")
                .defer("embedding")
                .first()
            )
    history = mark_undone(
        list(
            image.events.exclude(action=LabelEvent.Action.IMPORT)
            .select_related("actor", "from_category", "to_category")
            .order_by("-id")[:HISTORY_LIMIT]
        )
    )
    return Focus(
        image=image,
        score=score,
        version=version,
        categories=categories,
        bars=class_bars(
            score=score or suggestion,
            version=version,
            categories=categories,
            label_id=image.label_id,
        ),
        history=history,
        suggestion=suggestion,
    )
