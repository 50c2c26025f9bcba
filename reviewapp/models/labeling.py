"""Labeling: the model's suggestions for unlabeled images, and claimed queue cards."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from .images import Image
from .projects import Category, Project
from .training import ModelVersion


class Suggestion(models.Model):
    """A model version's suggested label for an unlabeled image, and what orders the queue."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="suggestions")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="suggestions")
    predicted = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    confidence = models.FloatField()
    margin = models.FloatField(help_text="Top probability minus the second.")
    entropy = models.FloatField()
    probabilities = models.JSONField(help_text="In the version's vocab order.")
    embedding = models.BinaryField(help_text="float32 projection of the body's pooled features.")
    cluster = models.PositiveIntegerField(default=0)
    diverse_rank = models.PositiveIntegerField(
        default=0, help_text="Place in the diverse order (0 first)."
    )
    random_key = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "image"], name="suggestion_unique_image")
        ]
        indexes = [
            models.Index(fields=["version", "margin", "id"]),
            models.Index(fields=["version", "-confidence", "id"]),
            models.Index(fields=["version", "diverse_rank", "id"]),
            models.Index(fields=["version", "random_key", "id"]),
            models.Index(fields=["version", "predicted"]),
        ]

    def __str__(self):
        return f"{self.version} suggests for image {self.image_id}"


class QueueClaim(models.Model):
    """A card of a queue held by one person for a while, so two never get the same cards."""

    class Queue(models.TextChoices):
        LABEL = "label", "Label queue"
        REVIEW = "review", "Review queue"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="claims")
    queue = models.CharField(max_length=10, choices=Queue.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    claimed_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["queue", "image"], name="claim_unique_image")
        ]
        indexes = [
            models.Index(fields=["project", "queue", "expires_at"]),
            models.Index(fields=["user", "queue", "expires_at"]),
        ]

    def __str__(self):
        return f"{self.get_queue_display()} claim of image {self.image_id} by {self.user_id}"
