"""Training runs and model versions: lists, the latest, trust, scores and comparisons."""

from dataclasses import dataclass

from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery

from ..models import Category, Image, ImageScore, ModelVersion, Project, TrainingRun

__all__ = [
    "ClassDelta",
    "PredictionChange",
    "SCORE_ORDERS",
    "VersionComparison",
    "image_score_list",
    "model_version_compare",
    "model_version_latest",
    "model_version_list",
    "model_version_trust",
    "training_run_active",
    "training_run_list",
    "training_run_queryset",
    "version_class_errors",
]


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
