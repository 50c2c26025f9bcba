"""A project's counts: images per class and split, for its page."""

from dataclasses import dataclass, field

from django.db.models import Count

from ..models import Category, Image, Project

__all__ = ["ClassCounts", "ProjectCounts", "project_counts"]


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
