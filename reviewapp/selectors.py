"""Reads: the queries pages and the API share."""

from dataclasses import dataclass, field

from django.db.models import Count, QuerySet

from .models import Category, Image, Project

__all__ = ["ImagePage", "ProjectCounts", "image_list", "project_counts"]


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
