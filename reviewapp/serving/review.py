"""Reviewing predictions: the review queues, and a reviewer's verdict on a request."""

from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, OuterRef, Subquery
from django.utils import timezone

from ..models import Category, Image, Prediction, Project
from ..services import image_ingest

__all__ = ["disagreements_to_review", "prediction_review", "predictions_to_review"]


def predictions_to_review(*, project: Project, limit: int = 50) -> list[Prediction]:
    """Served predictions flagged for review and not reviewed yet, oldest first."""
    return list(
        Prediction.objects.filter(
            project=project, needs_review=True, reviewed_at__isnull=True, is_shadow=False
        )
        .select_related("version", "client")
        .order_by("created_at", "id")[:limit]
    )


def _served_of(field_name: str):
    return Subquery(
        Prediction.objects.filter(request_id=OuterRef("request_id"), is_shadow=False).values(
            field_name
        )[:1]
    )


def disagreements_to_review(*, project: Project, limit: int = 50) -> list[Prediction]:
    """Shadow answers that disagree with the served one, whose request nobody labeled yet.

    Each carries ``served``: the answer that was sent.
    """
    shadows = list(
        Prediction.objects.filter(project=project, is_shadow=True)
        .annotate(served_label=_served_of("label"), served_reviewed=_served_of("reviewed_at"))
        .filter(served_label__isnull=False, served_reviewed__isnull=True)
        .exclude(label=F("served_label"))
        .select_related("version")
        .order_by("created_at", "id")[:limit]
    )
    served = {
        p.request_id: p
        for p in Prediction.objects.filter(
            request_id__in=[s.request_id for s in shadows], is_shadow=False
        ).select_related("version")
    }
    for shadow in shadows:
        shadow.served = served.get(shadow.request_id)
    return [s for s in shadows if s.served is not None]


def _read_file(name: str) -> bytes:
    with default_storage.open(name, "rb") as f:
        return f.read()


@transaction.atomic
def prediction_review(
    *,
    prediction: Prediction,
    label: Category,
    actor,
    add_to_dataset: bool = False,
) -> Prediction:
    """Record the true class of a request: confirmed when the model said it, else corrected.

    Every stored answer of the request (shadow ones too) gets the reviewer's label, so a
    shadow version's accuracy on reviewed traffic is known. ``add_to_dataset`` also ingests
    the image into the project with that label (source: production), in the same action.
    """
    if label.project_id != prediction.project_id:
        raise ValidationError({"label": f"'{label.name}' is not a class of this project."})
    now = timezone.now()
    answers = list(
        Prediction.objects.select_for_update().filter(request_id=prediction.request_id)
    ) or [prediction]
    for answer in answers:
        answer.review = (
            Prediction.Review.CONFIRMED
            if answer.label == label.name
            else Prediction.Review.CORRECTED
        )
        answer.reviewed_label = label
        answer.reviewed_by = actor
        answer.reviewed_at = now
    if add_to_dataset:
        image_id = _prediction_ingest(prediction=prediction, label=label, actor=actor)
        for answer in answers:
            answer.added_image_id = image_id
    Prediction.objects.bulk_update(
        answers, ["review", "reviewed_label", "reviewed_by", "reviewed_at", "added_image"]
    )
    prediction.refresh_from_db()
    return prediction


def _prediction_ingest(*, prediction: Prediction, label: Category, actor) -> int:
    try:
        data = _read_file(prediction.file)
    except OSError:
        raise ValidationError(
            f"The image of prediction #{prediction.pk} is no longer stored; it cannot be added."
        ) from None
    result = image_ingest(
        project=prediction.project,
        data=data,
        name=f"prediction-{prediction.pk}.{prediction.file.rsplit('.', 1)[-1]}",
        label=label,
        source=Image.Source.PRODUCTION,
        actor=actor,
    )
    if result.status == "rejected" or result.image_id is None:
        raise ValidationError(f"The image could not be added: {result.reason}")
    return result.image_id
