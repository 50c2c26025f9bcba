"""Review decisions on one image or many: confirm, relabel, delete, restore, undo; each
checks the image's revision so a stale page never overwrites someone else's decision."""

from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .. import claims
from ..models import Category, Image, LabelEvent, ModelVersion

__all__ = [
    "DECISION_ACTIONS",
    "DecisionResult",
    "StaleRevision",
    "image_decide",
    "image_decision_undo",
    "images_decide",
]


class StaleRevision(Exception):
    """The image changed since the caller saw it; nothing was applied."""

    def __init__(self, image: Image, last: LabelEvent | None):
        self.image, self.last = image, last
        who = ""
        if last is not None and last.action != LabelEvent.Action.IMPORT:
            who = f" by {last.actor.get_username() if last.actor else 'the system'}"
            who += f" ({last.get_action_display().lower()})"
        state = f"labeled '{image.label.name}'" if image.label else "unlabeled"
        if image.status == Image.Status.DELETED:
            state += ", in the trash"
        super().__init__(
            f"Image #{image.pk} was changed{who} since you loaded it: it is now {state} "
            f"(revision {image.revision}). Your action was not applied; look again and decide."
        )


@dataclass
class DecisionResult:
    image_id: int
    ok: bool
    message: str = ""
    event_id: int | None = None


Action = LabelEvent.Action


DECISION_ACTIONS = ("confirm", "relabel", "delete", "restore")


def _locked_image(image_id: int) -> Image:
    try:
        # of=self: PostgreSQL cannot lock the nullable side of the label's outer join.
        return (
            Image.objects.select_for_update(of=("self",)).select_related("label").get(pk=image_id)
        )
    except Image.DoesNotExist:
        raise ValidationError(f"There is no image #{image_id}.") from None


def _last_event(image: Image) -> LabelEvent | None:
    return image.events.select_related("actor").order_by("-id").first()


@transaction.atomic
def image_decide(
    *,
    image_id: int,
    action: str,
    actor,
    revision: int,
    label: Category | None = None,
    version: ModelVersion | None = None,
    note: str = "",
) -> LabelEvent:
    """Confirm, relabel, delete or restore one image; refused if ``revision`` is stale."""
    image = _locked_image(image_id)
    if image.revision != revision:
        raise StaleRevision(image, _last_event(image))
    before = image.label
    if action == "relabel":
        if label is None:
            raise ValidationError({"label": "Relabel needs the new label."})
        if label.project_id != image.project_id:
            raise ValidationError({"label": f"'{label.name}' is not a class of this project."})
        if image.status == Image.Status.DELETED:
            raise ValidationError("This image is in the trash; restore it before relabeling.")
        if label.pk == image.label_id:
            action = "confirm"  # the label it already has: the reviewer agrees with it
        else:
            image.label = label
            kind = Action.RELABEL if before is not None else Action.LABEL
    if action == "confirm":
        if image.status == Image.Status.DELETED:
            raise ValidationError("This image is in the trash; restore it before confirming.")
        if image.label is None:
            raise ValidationError("An unlabeled image cannot be confirmed; give it a label.")
        kind = Action.CONFIRM
    elif action == "delete":
        if image.status == Image.Status.DELETED:
            raise ValidationError("This image is already in the trash.")
        image.status, kind = Image.Status.DELETED, Action.DELETE
    elif action == "restore":
        if image.status == Image.Status.ACTIVE:
            raise ValidationError("This image is not in the trash.")
        image.status, kind = Image.Status.ACTIVE, Action.RESTORE
    elif action != "relabel":
        raise ValidationError(
            {"action": f"Unknown action '{action}'; use one of {', '.join(DECISION_ACTIONS)}."}
        )
    now = timezone.now()
    image.revision += 1
    image.reviewed_at = now
    image.save(update_fields=["label", "status", "revision", "reviewed_at", "updated_at"])
    held_by = claims.claim_holder(image_id=image.pk, actor=actor)
    if image.label_id is not None or image.status == Image.Status.DELETED:
        claims.claims_leave_label_queue(image_id=image.pk)  # labeled: it leaves the queue
    return LabelEvent.objects.create(
        project_id=image.project_id,
        image=image,
        actor=actor,
        action=kind,
        from_category=before,
        to_category=image.label,
        note=note[:1000],
        version=version,
        claimed_by=held_by,
    )


def images_decide(
    *,
    images: Iterable[tuple[int, int]],
    action: str,
    actor,
    label: Category | None = None,
    version: ModelVersion | None = None,
) -> list[DecisionResult]:
    """One decision for many (image id, revision) pairs; each stands or fails alone."""
    results = []
    for image_id, revision in images:
        try:
            event = image_decide(
                image_id=image_id,
                action=action,
                actor=actor,
                revision=revision,
                label=label,
                version=version,
            )
        except (StaleRevision, ValidationError) as exc:
            message = str(exc) if isinstance(exc, StaleRevision) else " ".join(exc.messages)
            results.append(DecisionResult(image_id, False, message))
        else:
            results.append(DecisionResult(image_id, True, event_id=event.pk))
    return results


@transaction.atomic
def image_decision_undo(*, image_id: int, actor, revision: int) -> LabelEvent:
    """Revert the latest decision on an image that still stands; the undo is audited too."""
    image = _locked_image(image_id)
    if image.revision != revision:
        raise StaleRevision(image, _last_event(image))
    last = (
        image.events.filter(action__in=LabelEvent.DECISIONS, undone_by__isnull=True)
        .select_related("from_category", "to_category")
        .order_by("-id")
        .first()
    )
    if last is None:
        raise ValidationError("There is no decision on this image to undo.")
    current = image.label
    if last.action in (Action.LABEL, Action.RELABEL):
        if last.from_category_id is None and last.action == Action.RELABEL:
            raise ValidationError(
                "The label this image had before was deleted (merged away); relabel it instead."
            )
        image.label = last.from_category
    elif last.action == Action.DELETE:
        image.status = Image.Status.ACTIVE
    elif last.action == Action.RESTORE:
        image.status = Image.Status.DELETED
    event = LabelEvent.objects.create(
        project_id=image.project_id,
        image=image,
        actor=actor,
        action=Action.UNDO,
        from_category=current,
        to_category=image.label,
        note=f"undid {last.get_action_display().lower()} #{last.pk}",
        version_id=last.version_id,
        undo_of=last,
    )
    image.revision += 1
    image.reviewed_at = (
        image.events.filter(action__in=LabelEvent.DECISIONS, undone_by__isnull=True)
        .order_by("-id")
        .values_list("created_at", flat=True)
        .first()
    )
    image.save(update_fields=["label", "status", "revision", "reviewed_at", "updated_at"])
    return event
