"""Label audits: out-of-fold scores that find suspicious labels, duplicates and outliers."""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse

from .images import Image
from .projects import Category, Project
from .training import ModelVersion


class LabelAudit(models.Model):
    """Out-of-fold scoring of a project's labeled images: k fold jobs, then the rankings."""

    class Mode(models.TextChoices):
        FULL = "full", "Full: one model trained per fold"
        FAST = "fast", "Fast: a linear head per fold on the model's embeddings"

    class Status(models.TextChoices):
        PENDING = "pending", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Phase(models.TextChoices):
        QUEUED = "queued", "Waiting for a training worker"
        PREPARING = "preparing", "Assigning folds and embedding the images"
        FOLDS = "folds", "Scoring the folds"
        FINISHING = "finishing", "Ranking labels, finding near-duplicates and outliers"
        DONE = "done", "Done"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="label_audits")
    version = models.ForeignKey(
        ModelVersion,
        on_delete=models.CASCADE,
        related_name="label_audits",
        help_text="The model whose body embeds the images (fast mode, duplicates, outliers).",
    )
    mode = models.CharField(max_length=4, choices=Mode.choices, default=Mode.FAST)
    k = models.PositiveSmallIntegerField(
        default=5, validators=[MinValueValidator(2), MaxValueValidator(20)]
    )
    seed = models.PositiveIntegerField(default=42)
    config = models.JSONField(default=dict, blank=True, help_text="Full mode's TrainConfig.")
    vocab = models.JSONField(default=list, blank=True, help_text="Class names, column order.")
    # Frozen when it starts: [[image id, label name, split, fold], ...].
    snapshot = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    phase = models.CharField(max_length=10, choices=Phase.choices, default=Phase.QUEUED)
    folds_finished = models.JSONField(default=list, blank=True, help_text="Fold numbers done.")
    n_images = models.PositiveIntegerField(default=0)
    estimated_issues = models.PositiveIntegerField(null=True, blank=True)
    n_issues = models.PositiveIntegerField(null=True, blank=True)
    n_duplicate_groups = models.PositiveIntegerField(null=True, blank=True)
    n_leaks = models.PositiveIntegerField(null=True, blank=True)
    thresholds = models.JSONField(default=list, blank=True, help_text="Per-class thresholds.")
    # How far to trust the order (trainer.trust): None on audits finished before it.
    oof_accuracy = models.FloatField(
        null=True, blank=True, help_text="Out-of-fold accuracy against the given labels."
    )
    chance_accuracy = models.FloatField(
        null=True, blank=True, help_text="The largest class's share: always guessing it."
    )
    version_accuracy = models.FloatField(
        null=True, blank=True, help_text="The version's own validation accuracy."
    )
    issues_low = models.PositiveIntegerField(null=True, blank=True)
    issues_high = models.PositiveIntegerField(null=True, blank=True)
    trust = models.JSONField(
        default=dict,
        blank=True,
        help_text="trainer.trust's whole assessment: per-class recall, warning, suggestions.",
    )
    error_message = models.TextField(blank=True)
    reason = models.CharField(max_length=300, blank=True, help_text="Why it was started.")
    dispatched_at = models.DateTimeField(null=True, blank=True)
    dispatch_count = models.PositiveSmallIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["project", "-id"])]

    def __str__(self):
        return f"Label audit {self.pk} of {self.project.slug}"

    def get_absolute_url(self):
        return reverse("label-audit", kwargs={"pk": self.pk})

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def folds_done(self) -> int:
        return len(self.folds_finished)

    @property
    def progress_percent(self) -> int:
        return min(100, round(100 * self.folds_done / self.k)) if self.k else 0

    @property
    def is_weak(self) -> bool:
        """Its fold models were near chance: the order and the count say little."""
        return bool(self.trust.get("weak"))


class AuditScore(models.Model):
    """One image scored out-of-fold by a label audit, with its rankings and neighbours."""

    audit = models.ForeignKey(LabelAudit, on_delete=models.CASCADE, related_name="scores")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="audit_scores")
    label = models.ForeignKey(
        Category,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The image's label when it was audited.",
    )
    predicted = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    probabilities = models.JSONField(help_text="Out-of-fold, in the audit's vocab order.")
    fold = models.PositiveSmallIntegerField()
    split = models.CharField(max_length=5, choices=Image.Split.choices)
    loss = models.FloatField()
    self_confidence = models.FloatField()
    margin = models.FloatField(null=True, blank=True, help_text="Normalized margin.")
    is_issue = models.BooleanField(default=False, help_text="Confident learning calls it wrong.")
    outlier_score = models.FloatField(null=True, blank=True)
    duplicate_group = models.IntegerField(null=True, blank=True)
    leaks = models.BooleanField(
        default=False, help_text="A near-duplicate of it is in the other split."
    )

    class Meta:
        ordering = ["-loss"]
        constraints = [
            models.UniqueConstraint(fields=["audit", "image"], name="auditscore_unique_image")
        ]
        indexes = [
            models.Index(fields=["audit", "-loss", "id"]),
            models.Index(fields=["audit", "self_confidence", "id"]),
            models.Index(fields=["audit", "margin", "id"]),
            models.Index(fields=["audit", "-is_issue", "margin", "id"]),
            models.Index(fields=["audit", "-outlier_score", "id"]),
            models.Index(fields=["audit", "-leaks", "duplicate_group", "id"]),
        ]

    def __str__(self):
        return f"{self.audit} on image {self.image_id}"

    @property
    def confidence(self) -> float:
        """The predicted class's probability, as the review card shows it."""
        return max(self.probabilities) if self.probabilities else 0.0

    @property
    def in_training(self) -> bool:
        return False  # out-of-fold: the model that scored it never saw it
