"""Working as a team: each reviewer's own settings, and relabels that wait for a second opinion."""

from django.conf import settings
from django.db import models
from django.db.models import Q


class ReviewerPreference(models.Model):
    """How the review and label queues behave for one person, remembered across sessions."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviewer_preference"
    )
    auto_advance = models.BooleanField(
        default=True, help_text="After a decision, move to the next card by itself."
    )

    def __str__(self):
        return f"Reviewer preference of {self.user_id}"


class SecondOpinion(models.Model):
    """A relabel proposed under the project's second-reviewer rule, waiting for another reviewer.

    The image keeps its label until someone else agrees (the relabel is then applied) or
    overrides (keeps the label, or sets another one); the proposer can withdraw it.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting"
        AGREED = "agreed", "Agreed"
        OVERRIDDEN = "overridden", "Overridden"
        WITHDRAWN = "withdrawn", "Withdrawn"

    project = models.ForeignKey(
        "reviewapp.Project", on_delete=models.CASCADE, related_name="second_opinions"
    )
    image = models.ForeignKey(
        "reviewapp.Image", on_delete=models.CASCADE, related_name="second_opinions"
    )
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    from_category = models.ForeignKey(
        "reviewapp.Category", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    to_category = models.ForeignKey(
        "reviewapp.Category", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    version = models.ForeignKey(
        "reviewapp.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The model version whose review queue the relabel was proposed in.",
    )
    note = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    resolution = models.ForeignKey(
        "reviewapp.LabelEvent",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The label event that applied the outcome, if the label changed.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["image"],
                condition=Q(status="pending"),
                name="second_opinion_one_pending",
            )
        ]
        indexes = [models.Index(fields=["project", "status", "id"])]

    def __str__(self):
        return f"Second opinion on image {self.image_id}: {self.status}"
