"""The review queue: its filters, keyset pages, progress, and each card's last decisions."""

from dataclasses import dataclass

from django.db.models import Q, QuerySet

from ..models import Image, ImageScore, LabelEvent, ModelVersion

__all__ = [
    "attach_recent_events",
    "ReviewFilters",
    "ReviewPage",
    "ReviewProgress",
    "attach_undos",
    "image_recent_decisions",
    "mark_undone",
    "parse_review_cursor",
    "review_page",
    "review_progress",
]


@dataclass
class ReviewFilters:
    label: int | None = None  # given class at scoring time
    predicted: int | None = None
    split: str = ""
    reviewed: bool | None = None  # None: both
    flagged_only: bool = False
    min_loss: float | None = None


@dataclass
class ReviewPage:
    scores: list[ImageScore]
    next_cursor: str | None  # "<loss>:<score id>" of the last card, for the next page


def _review_queryset(*, version: ModelVersion, filters: ReviewFilters) -> QuerySet[ImageScore]:
    qs = ImageScore.objects.filter(version=version)
    if filters.label is not None:
        qs = qs.filter(label_id=filters.label)
    if filters.predicted is not None:
        qs = qs.filter(predicted_id=filters.predicted)
    if filters.split:
        qs = qs.filter(split=filters.split)
    if filters.flagged_only:
        qs = qs.filter(flagged=True)
    if filters.min_loss is not None:
        qs = qs.filter(loss__gte=filters.min_loss)
    if filters.reviewed is True:
        qs = qs.filter(image__reviewed_at__isnull=False)
    elif filters.reviewed is False:
        qs = qs.filter(image__reviewed_at__isnull=True)
    return qs


def parse_review_cursor(cursor: str) -> tuple[float, int] | None:
    try:
        loss, pk = cursor.split(":")
        return float(loss), int(pk)
    except (ValueError, AttributeError):
        return None


def review_page(
    *,
    version: ModelVersion,
    filters: ReviewFilters,
    after: str = "",
    limit: int = 24,
    exclude: list[int] | tuple = (),
) -> ReviewPage:
    """One page of the queue, highest loss first, by keyset on (loss, id): no OFFSET.

    Deleted images stay in the queue so a reviewer sees (and can undo) what they did;
    the trash view lists them for good. ``exclude``: image ids left out (cards other
    reviewers hold), a short literal list the index scan skips.
    """
    qs = _review_queryset(version=version, filters=filters)
    if exclude:
        qs = qs.exclude(image_id__in=list(exclude))
    if cursor := parse_review_cursor(after):
        loss, pk = cursor
        qs = qs.filter(Q(loss__lt=loss) | Q(loss=loss, id__gt=pk))
    # Only labeled images are scored, so every loss is set; a plain "-loss" matches the
    # (version, -loss, id) index on both databases (NULLS LAST would not on PostgreSQL).
    scores = list(
        qs.filter(loss__isnull=False)
        .select_related("image__label", "label", "predicted")
        .order_by("-loss", "id")[: limit + 1]
    )
    has_more = len(scores) > limit
    scores = scores[:limit]
    attach_recent_events(scores)
    last = scores[-1] if scores else None
    cursor = f"{last.loss!r}:{last.pk}" if has_more and last and last.loss is not None else None
    return ReviewPage(scores=scores, next_cursor=cursor)


def attach_recent_events(scores: list[ImageScore], per_image: int = 3) -> None:
    """Each card's latest decisions, in one query for the whole page."""
    ids = [s.image_id for s in scores]
    by_image: dict[int, list] = {pk: [] for pk in ids}
    events = (
        LabelEvent.objects.filter(image_id__in=ids)
        .exclude(action=LabelEvent.Action.IMPORT)
        .select_related("actor", "from_category", "to_category")
        .order_by("-id")
    )
    for event in events:
        if len(by_image[event.image_id]) < per_image:
            by_image[event.image_id].append(event)
    for score in scores:
        score.image.recent_events = mark_undone(by_image[score.image_id])


def mark_undone(events: list) -> list:
    """Set ``event.undone`` from the list itself: an undo is newer than what it undid.

    No join on ``undone_by``: SQLite's statistics see every empty ``undo_of`` as one value
    and would then scan the whole event table.
    """
    undone = {e.undo_of_id for e in events if e.undo_of_id}
    for event in events:
        event.undone = event.pk in undone
    return events


def image_recent_decisions(image: Image, n: int = 3) -> list:
    """A card's last ``n`` events after its import, newest first, undone ones marked."""
    return mark_undone(
        list(
            image.events.exclude(action="import")
            .select_related("actor", "from_category", "to_category")
            .order_by("-id")[:n]
        )
    )


def attach_undos(events: list) -> list:
    """Set ``event.undone_event``: the undo that reverted it, or None; one indexed query."""
    ids = [e.pk for e in events]
    undos = {
        u.undo_of_id: u
        for u in LabelEvent.objects.filter(undo_of_id__in=ids).select_related("actor")
    }
    for event in events:
        event.undone_event = undos.get(event.pk)
    return events


@dataclass
class ReviewProgress:
    flagged: int
    reviewed: int

    @property
    def percent(self) -> int:
        return round(100 * self.reviewed / self.flagged) if self.flagged else 100


def review_progress(*, version: ModelVersion, filters: ReviewFilters) -> ReviewProgress:
    """How many flagged images under the current class/split filter a person has decided on."""
    scope = ReviewFilters(label=filters.label, predicted=filters.predicted, split=filters.split)
    flagged = _review_queryset(version=version, filters=scope).filter(flagged=True)
    # Driven from the (few) reviewed images on their partial index, not the flagged scores.
    reviewed_images = Image.objects.filter(
        project_id=version.project_id, reviewed_at__isnull=False
    ).values("id")
    reviewed = flagged.filter(image_id__in=reviewed_images)
    if version.flag_counts is None:  # scored before the counts were kept
        n_flagged = flagged.count()
    else:
        n_flagged = sum(
            n
            for label, predicted, split, n in version.flag_counts
            if scope.label in (None, label)
            and scope.predicted in (None, predicted)
            and scope.split in ("", split)
        )
    return ReviewProgress(flagged=n_flagged, reviewed=reviewed.count())
