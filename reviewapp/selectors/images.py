"""Images: the browser's keyset pages, the trash, and the dataset export's list."""

from dataclasses import dataclass

from django.db.models import Q, QuerySet

from ..models import Image, LabelEvent, Project

__all__ = [
    "ImagePage",
    "UNLABELED",
    "dataset_image_list",
    "image_list",
    "image_queryset",
    "image_trash_list",
]


@dataclass
class ImagePage:
    images: list[Image]
    next_cursor: int | None  # pass as ``before`` for the next page
    has_previous: bool


UNLABELED = "none"


def image_queryset(
    *, project: Project, label: str | int | None = None, split: str = "", status: str = "active"
) -> QuerySet[Image]:
    """Images of a project filtered by label id (or ``"none"``), split and status."""
    qs = Image.objects.filter(project=project)
    if status:
        qs = qs.filter(status=status)
    if label == UNLABELED:
        qs = qs.filter(label__isnull=True)
    elif label not in (None, ""):
        qs = qs.filter(label_id=label)
    if split:
        qs = qs.filter(split=split)
    return qs


def image_list(
    *,
    project: Project,
    label: str | int | None = None,
    split: str = "",
    status: str = "active",
    before: int | None = None,
    limit: int = 60,
) -> ImagePage:
    """One page, newest first, by keyset on id: no OFFSET, no COUNT, fast at any depth."""
    qs = image_queryset(project=project, label=label, split=split, status=status)
    if before:
        qs = qs.filter(id__lt=before)
    images = list(qs.select_related("label").order_by("-id")[: limit + 1])
    next_cursor = images[limit - 1].pk if len(images) > limit else None
    return ImagePage(images=images[:limit], next_cursor=next_cursor, has_previous=bool(before))


def image_trash_list(*, project: Project, before: int | None = None, limit: int = 48) -> ImagePage:
    """Deleted images newest first by id, each with ``deletion``: the event that trashed it.

    ``deletion`` is the latest delete (or undo of a restore) on the image, or None when the
    image was trashed without one; all of them come in one query for the page.
    """
    page = image_list(project=project, status=Image.Status.DELETED, before=before, limit=limit)
    Action = LabelEvent.Action
    deletions = (
        LabelEvent.objects.filter(image_id__in=[i.pk for i in page.images])
        .filter(Q(action=Action.DELETE) | Q(action=Action.UNDO, undo_of__action=Action.RESTORE))
        .select_related("actor")
        .order_by("image_id", "-id")
    )
    latest: dict[int, object] = {}
    for event in deletions:
        latest.setdefault(event.image_id, event)
    for image in page.images:
        image.deletion = latest.get(image.pk)
    return page


def dataset_image_list(*, project: Project) -> QuerySet[Image]:
    """The export's images: active and labeled, grouped by class in the classes' own order."""
    fields = ("id", "label_id", "split", "sha256", "width", "height", "format", "file")
    return (
        Image.objects.filter(project=project, status=Image.Status.ACTIVE, label__isnull=False)
        .only(*fields, "original_name", "created_at")
        .order_by("label__position", "label__name", "id")
    )
