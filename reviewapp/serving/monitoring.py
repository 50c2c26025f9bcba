"""Monitoring: confidence, out-of-domain rates, class-mix drift and shadow agreement."""

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, F, Q
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from ..models import ImageScore, ModelVersion, Prediction, Project
from .review import _served_of
from .routing import serving_versions

__all__ = [
    "HISTOGRAM_BINS",
    "ClassMix",
    "Monitoring",
    "ShadowAgreement",
    "TimePoint",
    "drift_scores",
    "monitoring_summary",
    "request_answers",
]

HISTOGRAM_BINS = 10


@dataclass
class TimePoint:
    start: datetime
    total: int
    low_confidence: int
    ood: int
    needs_review: int

    @property
    def low_confidence_rate(self) -> float | None:
        return self.low_confidence / self.total if self.total else None

    @property
    def ood_rate(self) -> float | None:
        return self.ood / self.total if self.total else None


@dataclass
class ClassMix:
    name: str
    served: float  # share of served predictions
    training: float  # share of the training images


@dataclass
class ShadowAgreement:
    version: ModelVersion
    compared: int
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


@dataclass
class Monitoring:
    since: datetime
    by_hour: bool
    total: int
    points: list[TimePoint]
    histogram: list[int]  # counts per confidence bin of width 1 / HISTOGRAM_BINS
    class_mix: list[ClassMix]
    total_variation: float | None
    psi: float | None
    training_version: ModelVersion | None
    shadows: list[ShadowAgreement]
    reviewed: int
    corrected: int
    to_review: int

    @property
    def override_rate(self) -> float | None:
        return self.corrected / self.reviewed if self.reviewed else None

    @property
    def low_confidence_rate(self) -> float | None:
        total = sum(p.total for p in self.points)
        return sum(p.low_confidence for p in self.points) / total if total else None

    @property
    def ood_rate(self) -> float | None:
        total = sum(p.total for p in self.points)
        return sum(p.ood for p in self.points) / total if total else None


def _training_mix(version: ModelVersion | None) -> dict[str, int]:
    """Training images per class of ``version``: its run's snapshot, else its scores."""
    if version is None:
        return {}
    run = getattr(version, "run", None) if version.run_id else None
    if run is not None and run.snapshot:
        return dict(Counter(label for _, label, split in run.snapshot if split == "train"))
    rows = (
        ImageScore.objects.filter(version=version, in_training=True)
        .values("label__name")
        .annotate(n=Count("id"))
    )
    return {r["label__name"]: r["n"] for r in rows if r["label__name"]}


def drift_scores(served: dict[str, float], training: dict[str, float]) -> tuple[float, float]:
    """Total variation distance and the population stability index of two class mixes."""
    names = set(served) | set(training)
    tv = 0.5 * sum(abs(served.get(n, 0.0) - training.get(n, 0.0)) for n in names)
    eps = 1e-4  # an empty class would make PSI infinite
    psi = 0.0
    for n in names:
        p, q = max(served.get(n, 0.0), eps), max(training.get(n, 0.0), eps)
        psi += (p - q) * math.log(p / q)
    return tv, psi


def monitoring_summary(*, project: Project, days: int = 14) -> Monitoring:
    """The numbers of the monitoring page, over the last ``days`` days."""
    now = timezone.now()
    since = now - timedelta(days=days)
    served = Prediction.objects.filter(project=project, is_shadow=False, created_at__gte=since)
    first = served.order_by("created_at").values_list("created_at", flat=True).first()
    by_hour = first is None or now - first <= timedelta(hours=48)
    trunc = TruncHour if by_hour else TruncDay
    low = Q(confidence__lt=project.review_confidence)
    rows = (
        served.annotate(bucket=trunc("created_at"))
        .values("bucket")
        .annotate(
            total=Count("id"),
            low=Count("id", filter=low),
            ood=Count("id", filter=Q(is_ood=True)),
            review=Count("id", filter=Q(needs_review=True)),
        )
        .order_by("bucket")
    )
    points = [TimePoint(r["bucket"], r["total"], r["low"], r["ood"], r["review"]) for r in rows]
    histogram = [0] * HISTOGRAM_BINS
    confidences = served.values_list("confidence", flat=True)
    for confidence in confidences.iterator(chunk_size=5000):
        histogram[min(HISTOGRAM_BINS - 1, max(0, int(confidence * HISTOGRAM_BINS)))] += 1
    total = sum(histogram)

    versions = serving_versions(project=project)
    training_version = versions.live
    if training_version is not None:
        training_version = ModelVersion.objects.select_related("run").get(pk=training_version.pk)
    training_counts = _training_mix(training_version)
    served_counts = dict(served.values_list("label").annotate(n=Count("id")).order_by())
    names = sorted(set(training_counts) | set(served_counts))
    n_training = sum(training_counts.values())
    n_served = sum(served_counts.values())
    served_mix = {n: served_counts.get(n, 0) / n_served for n in names} if n_served else {}
    training_mix = {n: training_counts.get(n, 0) / n_training for n in names} if n_training else {}
    tv = psi = None
    if served_mix and training_mix:
        tv, psi = drift_scores(served_mix, training_mix)
    class_mix = [ClassMix(n, served_mix.get(n, 0.0), training_mix.get(n, 0.0)) for n in names]

    shadows = []
    shadow_rows = (
        Prediction.objects.filter(project=project, is_shadow=True, created_at__gte=since)
        .annotate(served_label=_served_of("label"))
        .filter(served_label__isnull=False)
        .values("version")
        .annotate(
            compared=Count("id"),
            agreed=Count("id", filter=Q(label=F("served_label"))),
        )
    )
    by_version = {v.pk: v for v in project.model_versions.only("pk", "number", "stage")}
    for row in shadow_rows:
        version = by_version.get(row["version"])
        if version is not None:
            shadows.append(ShadowAgreement(version, row["compared"], row["agreed"]))
    shadows.sort(key=lambda s: -s.version.number)

    reviewed = served.exclude(review="")
    return Monitoring(
        since=since,
        by_hour=by_hour,
        total=total,
        points=points,
        histogram=histogram,
        class_mix=class_mix,
        total_variation=tv,
        psi=psi,
        training_version=training_version,
        shadows=shadows,
        reviewed=reviewed.count(),
        corrected=reviewed.filter(review=Prediction.Review.CORRECTED).count(),
        to_review=served.filter(needs_review=True, reviewed_at__isnull=True).count(),
    )


def request_answers(*, request_id) -> dict[str, list[Prediction]]:
    """Every stored answer of one request, grouped served / shadow (for the admin and tests)."""
    grouped: dict[str, list[Prediction]] = defaultdict(list)
    for p in Prediction.objects.filter(request_id=request_id).select_related("version"):
        grouped["shadow" if p.is_shadow else "served"].append(p)
    return dict(grouped)
