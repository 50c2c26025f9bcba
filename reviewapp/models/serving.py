"""Serving: a version's rollout timeline and the live predictions it answered."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .images import Image
from .projects import Category, Project
from .tokens import ClientToken
from .training import ModelVersion


class RolloutEvent(models.Model):
    """One stage change of a version: the version's timeline and the project's audit."""

    version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="rollout_events"
    )
    from_stage = models.CharField(max_length=10, choices=ModelVersion.Stage.choices)
    to_stage = models.CharField(max_length=10, choices=ModelVersion.Stage.choices)
    traffic_share = models.PositiveSmallIntegerField(
        default=0, help_text="The version's share of traffic after the change, in percent."
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Empty when the system made the change (a guardrail, a promotion).",
    )
    reason = models.TextField(blank=True, help_text="The note, override reason or guardrail.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self):
        return f"{self.version}: {self.from_stage} -> {self.to_stage} ({self.traffic_share}%)"


class Prediction(models.Model):
    """One answer of one version to one prediction request; shadow answers are kept, not sent.

    The answers of every version asked for the same request share its ``request_id``.
    """

    class Review(models.TextChoices):
        CONFIRMED = "confirmed", "Confirmed"
        CORRECTED = "corrected", "Corrected"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="predictions")
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="predictions")
    stage = models.CharField(max_length=10, choices=ModelVersion.Stage.choices)
    request_id = models.UUIDField(db_index=True)
    is_shadow = models.BooleanField(default=False, help_text="Stored, never returned.")
    client = models.ForeignKey(
        ClientToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="predictions"
    )
    client_key = models.CharField(max_length=200, blank=True, help_text="The routing key.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who asked from the browser.",
    )
    # The image as received, relative to MEDIA_ROOT (shared by a request's answers).
    file = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    label = models.CharField(max_length=100, help_text="The predicted class name.")
    confidence = models.FloatField()
    probabilities = models.JSONField(help_text="In the version's vocab order.")
    ood_score = models.FloatField(null=True, blank=True)
    is_ood = models.BooleanField(default=False)
    needs_review = models.BooleanField(default=False)
    latency_ms = models.FloatField(default=0.0)
    runtime = models.CharField(
        max_length=20, blank=True, help_text="What answered: onnxruntime or torch."
    )
    created_at = models.DateTimeField(default=timezone.now)
    # The reviewer's answer.
    review = models.CharField(max_length=10, choices=Review.choices, blank=True)
    reviewed_label = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    added_image = models.ForeignKey(
        Image,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The dataset image made from it.",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["project", "created_at"]),
            models.Index(fields=["version", "created_at"]),
            models.Index(
                fields=["project", "created_at", "id"],
                condition=Q(needs_review=True, reviewed_at__isnull=True),
                name="prediction_to_review_idx",
            ),
        ]

    def __str__(self):
        return f"Prediction {self.pk} by {self.version}: {self.label}"
