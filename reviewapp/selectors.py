"""Reads: the queries pages and the API share."""

from dataclasses import dataclass, field

from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery

from .models import Category, Image, ImageScore, ModelVersion, Project, TrainingRun

__all__ = [
    "ImagePage",
    "ProjectCounts",
    "VersionComparison",
    "image_list",
    "image_score_list",
    "model_version_compare",
    "model_version_latest",
    "model_version_list",
    "project_counts",
    "ReviewPage",
    "review_page",
    "review_progress",
    "training_run_active",
    "training_run_list",
    "training_run_queryset",
    "EventPage",
    "SYSTEM_ACTOR",
    "dataset_image_list",
    "image_trash_list",
    "label_event_actors",
    "label_event_first_since",
    "ReviewerCounts",
    "reviewer_counts",
    "attach_undos",
    "label_event_list",
    "image_recent_decisions",
    "mark_undone",
]


@dataclass
class ClassCounts:
    category: Category | None  # None: unlabeled
    train: int = 0
    valid: int = 0

    @property
    def name(self) -> str:
        return self.category.name if self.category else "(unlabeled)"

    @property
    def total(self) -> int:
        return self.train + self.valid


@dataclass
class ProjectCounts:
    rows: list[ClassCounts] = field(default_factory=list)
    deleted: int = 0

    @property
    def train(self) -> int:
        return sum(r.train for r in self.rows)

    @property
    def valid(self) -> int:
        return sum(r.valid for r in self.rows)

    @property
    def total(self) -> int:
        return self.train + self.valid

    def as_dict(self) -> dict:
        return {
            "classes": [
                {
                    "category_id": r.category.pk if r.category else None,
                    "name": r.name,
                    "train": r.train,
                    "valid": r.valid,
                    "total": r.total,
                }
                for r in self.rows
            ],
            "train": self.train,
            "valid": self.valid,
            "total": self.total,
            "deleted": self.deleted,
        }


def project_counts(*, project: Project) -> ProjectCounts:
    """Active images per class x split (one grouped query on an index), plus the trash."""
    categories = list(project.categories.all())
    by_id: dict[int | None, ClassCounts] = {c.pk: ClassCounts(c) for c in categories}
    counts = ProjectCounts(rows=list(by_id.values()))
    grouped = (
        Image.objects.filter(project=project)
        .values_list("status", "label_id", "split")
        .annotate(n=Count("id"))
        .order_by()
    )
    for status, label_id, split, n in grouped:
        if status == Image.Status.DELETED:
            counts.deleted += n
            continue
        row = by_id.get(label_id)
        if row is None:
            row = by_id[label_id] = ClassCounts(None)
            counts.rows.append(row)
        setattr(row, split, getattr(row, split) + n)
    return counts


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


# Training runs and model versions ---------------------------------------------------


def training_run_queryset(*, project: Project) -> QuerySet[TrainingRun]:
    """The project's runs, newest first, without their (large) data snapshots."""
    return (
        project.training_runs.defer("snapshot")
        .select_related("created_by", "version")
        .order_by("-id")
    )


def training_run_list(*, project: Project, limit: int = 20) -> list[TrainingRun]:
    """The project's latest runs, newest first."""
    return list(training_run_queryset(project=project)[:limit])


def training_run_active(*, project: Project) -> list[TrainingRun]:
    """Runs queued or running, oldest first: the order the training queue takes them."""
    return list(
        project.training_runs.defer("snapshot")
        .filter(status__in=[TrainingRun.Status.PENDING, TrainingRun.Status.RUNNING])
        .order_by("id")
    )


def model_version_list(*, project: Project) -> QuerySet[ModelVersion]:
    return project.model_versions.select_related("run").order_by("-number")


def model_version_latest(*, project: Project) -> ModelVersion | None:
    return project.model_versions.order_by("-number").first()


def model_version_trust(*, version: ModelVersion) -> dict | None:
    """How far to trust the version's order (trainer.trust), from its validation metrics."""
    from trainer import version_trust

    metrics, config = version.metrics or {}, version.config or {}
    trust = version_trust(
        metrics.get("accuracy"),
        metrics.get("per_class"),
        n_classes=len(version.vocab or []),
        pretrained=version.pretrained,
        epochs=config.get("epochs"),
        image_size=config.get("image_size"),
    )
    return trust.to_dict() if trust else None


SCORE_ORDERS = {
    "loss": ("-loss", "id"),  # highest loss first: the likeliest label errors
    "confidence": ("confidence", "id"),  # least confident first
    "-confidence": ("-confidence", "id"),
}


def image_score_list(
    *,
    version: ModelVersion,
    label: int | None = None,
    predicted: int | None = None,
    split: str = "",
    order: str = "loss",
    active_only: bool = True,
) -> QuerySet[ImageScore]:
    """A version's scores filtered by given label, predicted class and split."""
    qs = ImageScore.objects.filter(version=version).select_related("image", "label", "predicted")
    if active_only:
        qs = qs.filter(image__status=Image.Status.ACTIVE)
    if label is not None:
        qs = qs.filter(label_id=label)
    if predicted is not None:
        qs = qs.filter(predicted_id=predicted)
    if split:
        qs = qs.filter(split=split)
    return qs.order_by(*SCORE_ORDERS.get(order, SCORE_ORDERS["loss"]))


@dataclass
class ClassDelta:
    name: str
    a_error: float | None
    b_error: float | None
    a_support: int
    b_support: int

    @property
    def change(self) -> float | None:
        if self.a_error is None or self.b_error is None:
            return None
        return self.b_error - self.a_error


@dataclass
class PredictionChange:
    image: Image
    label: Category | None
    a: ImageScore
    b: ImageScore

    @property
    def fixed(self) -> bool:
        """Wrong under A, right under B."""
        return not self.a.is_correct and self.b.is_correct

    @property
    def broken(self) -> bool:
        return self.a.is_correct and not self.b.is_correct


@dataclass
class VersionComparison:
    a: ModelVersion
    b: ModelVersion
    metrics: list[tuple[str, float | None, float | None]]
    classes: list[ClassDelta]
    changes: list[PredictionChange]
    n_changed: int
    n_fixed: int
    n_broken: int


def version_class_errors(version: ModelVersion) -> dict[str, tuple[float | None, int]]:
    """Per class: (error rate on the validation split, support), from the confusion matrix."""
    out = {}
    for i, name in enumerate(version.vocab):
        row = version.confusion_matrix[i] if i < len(version.confusion_matrix) else []
        support = sum(row)
        out[name] = ((support - row[i]) / support if support else None, support)
    return out


def model_version_compare(
    *, a: ModelVersion, b: ModelVersion, limit: int = 200
) -> VersionComparison:
    """Metrics, per-class validation error, and images whose prediction changed from A to B."""
    metrics = [
        (name, a.metrics.get(name), b.metrics.get(name))
        for name in ("accuracy", "error_rate", "n_train", "n_valid", "duration_s")
    ]
    a_errors, b_errors = version_class_errors(a), version_class_errors(b)
    names = list(dict.fromkeys([*a.vocab, *b.vocab]))
    classes = [
        ClassDelta(
            name,
            a_errors.get(name, (None, 0))[0],
            b_errors.get(name, (None, 0))[0],
            a_errors.get(name, (None, 0))[1],
            b_errors.get(name, (None, 0))[1],
        )
        for name in names
    ]
    # Scores of the same image under both versions whose predicted class differs.
    b_score = ImageScore.objects.filter(version=b, image_id=OuterRef("image_id"))
    a_changed = (
        ImageScore.objects.filter(version=a, image__status=Image.Status.ACTIVE)
        .annotate(b_predicted_id=Subquery(b_score.values("predicted_id")[:1]))
        .filter(b_predicted_id__isnull=False)
        .exclude(b_predicted_id=F("predicted_id"))
    )
    a_right, b_right = Q(predicted_id=F("label_id")), Q(b_predicted_id=F("label_id"))
    totals = a_changed.aggregate(
        n=Count("id"),
        fixed=Count("id", filter=~a_right & b_right),
        broken=Count("id", filter=a_right & ~b_right),
    )
    a_page = list(
        a_changed.select_related("image__label", "label", "predicted").order_by("-loss")[:limit]
    )
    b_by_image = {
        s.image_id: s
        for s in ImageScore.objects.filter(
            version=b, image_id__in=[s.image_id for s in a_page]
        ).select_related("label", "predicted")
    }
    changes = [
        PredictionChange(image=s.image, label=s.image.label, a=s, b=b_by_image[s.image_id])
        for s in a_page
        if s.image_id in b_by_image
    ]
    return VersionComparison(
        a=a,
        b=b,
        metrics=metrics,
        classes=classes,
        changes=changes,
        n_changed=totals["n"],
        n_fixed=totals["fixed"],
        n_broken=totals["broken"],
    )


# The review queue ------------------------------------------------------------------


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
    _attach_recent_events(scores)
    last = scores[-1] if scores else None
    cursor = f"{last.loss!r}:{last.pk}" if has_more and last and last.loss is not None else None
    return ReviewPage(scores=scores, next_cursor=cursor)


def _attach_recent_events(scores: list[ImageScore], per_image: int = 3) -> None:
    """Each card's latest decisions, in one query for the whole page."""
    from .models import LabelEvent

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
    from .models import LabelEvent

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


# Activity, trash and the dataset export ----------------------------------------------

SYSTEM_ACTOR = "system"  # the activity filter's value for events no person made


@dataclass
class EventPage:
    events: list  # LabelEvent, newest first
    next_cursor: int | None  # pass as ``before`` for the next page
    has_previous: bool


def label_event_list(
    *,
    project: Project,
    action: str = "",
    actor: int | str | None = None,
    before: int | None = None,
    limit: int = 50,
    since_id: int | None = None,
) -> EventPage:
    """A project's label events newest first, by keyset on id: one query, no COUNT, no OFFSET.

    ``actor`` is a user id, or ``"system"`` for events without a person (imports, scripts).
    """
    from .models import LabelEvent

    qs = LabelEvent.objects.filter(project=project)
    if action:
        qs = qs.filter(action=action)
    if actor == SYSTEM_ACTOR:
        qs = qs.filter(actor__isnull=True)
    elif actor not in (None, ""):
        qs = qs.filter(actor_id=actor)
    if before:
        qs = qs.filter(id__lt=before)
    if since_id is not None:
        qs = qs.filter(id__gte=since_id)
    # The image itself is not joined: its id is enough for the thumbnail and the link.
    events = list(
        qs.select_related("actor", "from_category", "to_category").order_by("-id")[: limit + 1]
    )
    next_cursor = events[limit - 1].pk if len(events) > limit else None
    events = attach_undos(events[:limit])
    return EventPage(events=events, next_cursor=next_cursor, has_previous=bool(before))


def label_event_first_since(since) -> int | None:
    """The id of the first label event at or after ``since``, on the created_at index: a
    period becomes an id bound that the (project, -id) indexes can use."""
    from .models import LabelEvent

    return (
        LabelEvent.objects.filter(created_at__gte=since)
        .order_by("created_at", "id")
        .values_list("id", flat=True)
        .first()
    )


@dataclass
class ReviewerCounts:
    actor_id: int
    username: str
    decisions: int  # label, relabel, confirm, delete, restore
    relabels: int
    undone: int  # of those decisions, the ones undone later (by anyone)


def reviewer_counts(
    *, project: Project, actor: int | str | None = None, since_id: int | None = None
) -> list[ReviewerCounts]:
    """Per person: decisions, relabels and decisions later undone, from ``since_id`` on
    (None: all time), for one person or everyone; one grouped query."""
    from .models import LabelEvent

    if actor == SYSTEM_ACTOR:
        return []  # the system makes imports and merges, not review decisions
    qs = LabelEvent.objects.filter(
        project=project, actor__isnull=False, action__in=LabelEvent.DECISIONS
    )
    if actor not in (None, ""):
        qs = qs.filter(actor_id=actor)
    if since_id is not None:
        qs = qs.filter(id__gte=since_id)
    rows = (
        qs.values_list("actor_id", "actor__username")
        .annotate(
            decisions=Count("id"),
            relabels=Count("id", filter=Q(action=LabelEvent.Action.RELABEL)),
            undone=Count("id", filter=Q(undone_by__isnull=False)),
        )
        .order_by("actor__username")
    )
    return [ReviewerCounts(*row) for row in rows]


def policy_runs_recent(*, project: Project, limit: int = 5) -> list:
    """The latest runs the retraining policy started, for the project's history."""
    from .models import TrainingRun

    return list(
        TrainingRun.objects.filter(project=project, trigger=TrainingRun.Trigger.POLICY)
        .defer("snapshot")
        .order_by("-id")[:limit]
    )


def label_event_actors(*, project: Project) -> list:
    """The people who changed something in this project, by username (one indexed probe each)."""
    from django.contrib.auth import get_user_model
    from django.db.models import Exists

    from .models import LabelEvent

    acted = LabelEvent.objects.filter(project=project, actor=OuterRef("pk"))
    return list(get_user_model().objects.filter(Exists(acted)).order_by("username"))


def image_trash_list(*, project: Project, before: int | None = None, limit: int = 48) -> ImagePage:
    """Deleted images newest first by id, each with ``deletion``: the event that trashed it.

    ``deletion`` is the latest delete (or undo of a restore) on the image, or None when the
    image was trashed without one; all of them come in one query for the page.
    """
    from .models import LabelEvent

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
