"""Guardrails: a serving version's recent error, low-confidence and out-of-domain rates
against the project's thresholds, and the pause when one trips."""

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Count, F, OuterRef, Q, Subquery

from ..models import ModelVersion, Prediction, Project
from .moves import Stage, move_version, sync_version

__all__ = [
    "GUARDRAIL_WINDOW",
    "Guardrail",
    "GuardrailRates",
    "MIN_GUARDRAIL_SAMPLE",
    "guardrail_rates",
    "guardrail_status",
    "guardrail_window_start",
    "guardrails_check",
    "limited_versions_guard",
    "version_guard",
]


# A rate counts against its threshold only once it rests on this many predictions.
MIN_GUARDRAIL_SAMPLE = 20


# Guardrails judge a version's latest predictions, so a check stays cheap at any volume and
# an old incident does not pause a version forever.
GUARDRAIL_WINDOW = 1000


@dataclass
class GuardrailRates:
    """How a version's served (or shadowed) predictions went; a rate is None without data."""

    n_predictions: int = 0
    n_low_confidence: int = 0
    n_compared: int = 0  # requests the live version also answered
    n_disagreements: int = 0
    n_reviewed: int = 0
    n_corrected: int = 0

    @staticmethod
    def _rate(part: int, whole: int) -> float | None:
        return part / whole if whole else None

    @property
    def shadow_disagreement(self) -> float | None:
        return self._rate(self.n_disagreements, self.n_compared)

    @property
    def override_rate(self) -> float | None:
        return self._rate(self.n_corrected, self.n_reviewed)

    @property
    def low_confidence_rate(self) -> float | None:
        return self._rate(self.n_low_confidence, self.n_predictions)


def guardrail_rates(*, version: ModelVersion, since: datetime | None = None) -> GuardrailRates:
    """Disagreement with live, reviewer override and low-confidence rates of a version.

    Disagreement compares the version's answer to each request with the answer of the
    version that was live when the request came (same ``request_id``).
    """
    project = version.project
    qs = Prediction.objects.filter(version=version)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    counts = qs.aggregate(
        n=Count("id"),
        low=Count("id", filter=Q(confidence__lt=project.review_confidence)),
        reviewed=Count("id", filter=~Q(review="")),
        corrected=Count("id", filter=Q(review=Prediction.Review.CORRECTED)),
    )
    rates = GuardrailRates(
        n_predictions=counts["n"],
        n_low_confidence=counts["low"],
        n_reviewed=counts["reviewed"],
        n_corrected=counts["corrected"],
    )
    if version.stage != Stage.LIVE:
        live_answer = (
            Prediction.objects.filter(request_id=OuterRef("request_id"), stage=Stage.LIVE)
            .exclude(version_id=version.pk)
            .values("label")[:1]
        )
        compared = qs.annotate(live_label=Subquery(live_answer)).filter(live_label__isnull=False)
        both = compared.aggregate(
            n=Count("id"), differ=Count("id", filter=~Q(label=F("live_label")))
        )
        rates.n_compared, rates.n_disagreements = both["n"], both["differ"]
    return rates


@dataclass
class Guardrail:
    """One guardrail of a version: its rate against the project's threshold."""

    name: str  # shadow_disagreement, override_rate, low_confidence_rate
    label: str
    rate: float | None
    threshold: float
    sample: int  # the rate's denominator
    min_sample: int = MIN_GUARDRAIL_SAMPLE

    @property
    def counted(self) -> bool:
        return self.rate is not None and self.sample >= self.min_sample

    @property
    def exceeded(self) -> bool:
        return self.counted and self.rate > self.threshold

    @property
    def reason(self) -> str:
        if self.rate is None:
            return f"{self.label}: no data yet."
        shown = f"{self.label} {self.rate:.0%} (threshold {self.threshold:.0%}, n={self.sample})"
        if not self.counted:
            return f"{shown}: not counted below {self.min_sample} predictions."
        return f"{shown}: exceeded." if self.exceeded else f"{shown}: within the threshold."


def guardrail_window_start(*, version: ModelVersion) -> datetime | None:
    """When the version's latest ``GUARDRAIL_WINDOW`` predictions begin; None: fewer exist."""
    return (
        Prediction.objects.filter(version=version)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[GUARDRAIL_WINDOW - 1 : GUARDRAIL_WINDOW]
        .first()
    )


def guardrail_status(*, version: ModelVersion, rates: GuardrailRates | None = None) -> list:
    """Every guardrail of the version over its latest predictions, exceeded or not."""
    if rates is None:
        since = guardrail_window_start(version=version)
        rates = guardrail_rates(version=version, since=since)
    project = version.project
    return [
        Guardrail(
            "shadow_disagreement",
            "Disagreement with live",
            rates.shadow_disagreement,
            project.max_shadow_disagreement,
            rates.n_compared,
        ),
        Guardrail(
            "override_rate",
            "Reviewer override rate",
            rates.override_rate,
            project.max_override_rate,
            rates.n_reviewed,
        ),
        Guardrail(
            "low_confidence_rate",
            "Low-confidence rate",
            rates.low_confidence_rate,
            project.max_low_confidence,
            rates.n_predictions,
        ),
    ]


def guardrails_check(*, version: ModelVersion) -> list[Guardrail]:
    """The guardrails the version exceeds; each has a ``reason`` a person can read."""
    return [g for g in guardrail_status(version=version) if g.exceeded]


@transaction.atomic
def version_guard(*, version: ModelVersion) -> list[Guardrail]:
    """Pause a limited version that exceeds a guardrail; returns the exceeded guardrails.

    Call it after storing predictions. Pausing keeps the share (the router sends a paused
    version nothing) and writes an event with no actor. A version that is not limited, or is
    paused already, costs one query and returns ``[]``.
    """
    unpaused_limited = ModelVersion.objects.filter(
        pk=version.pk, stage=Stage.LIMITED, paused_reason=""
    )
    if not unpaused_limited.exists():
        return []
    Project.objects.select_for_update().filter(pk=version.project_id).first()
    current = ModelVersion.objects.select_for_update().select_related("project").get(pk=version.pk)
    exceeded = guardrails_check(version=current) if current.stage == Stage.LIMITED else []
    if exceeded and not current.paused_reason:
        reason = "Paused by a guardrail: " + " ".join(g.reason for g in exceeded)
        move_version(
            current,
            stage=Stage.LIMITED,
            share=current.traffic_share,
            actor=None,
            reason=reason,
            paused_reason=reason,
        )
        sync_version(version, current)
    return exceeded


def limited_versions_guard() -> list[ModelVersion]:
    """Check every unpaused limited version; returns the ones it paused."""
    paused = []
    for version in ModelVersion.objects.filter(stage=Stage.LIMITED, paused_reason=""):
        if version_guard(version=version):
            paused.append(version)
    return paused
