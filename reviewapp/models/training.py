"""Training: runs, the model versions they make, their scores of every image, and the
ImageNet weights they start from."""

from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from .images import Image
from .projects import Category, Project


class TrainingRun(models.Model):
    """One background training job: config and data frozen, progress, metrics, outcome."""

    class Status(models.TextChoices):
        PENDING = "pending", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Phase(models.TextChoices):
        QUEUED = "queued", "Waiting for a training worker"
        PREPARING = "preparing", "Checking images and building the DataBlock"
        DOWNLOADING = "download", "Downloading ImageNet weights"
        TRAINING = "training", "Training"
        SCORING = "scoring", "Scoring every image"
        SUGGESTING = "suggest", "Suggesting labels for unlabeled images"
        DONE = "done", "Done"

    class Trigger(models.TextChoices):
        MANUAL = "manual", "Started by a person"
        RETRAIN = "retrain", "Retrain with the last settings"
        POLICY = "policy", "The project's retraining policy"
        API = "api", "The API"
        COMMAND = "command", "manage.py train"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="training_runs")
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.MANUAL)
    reason = models.CharField(max_length=300, blank=True, help_text="Why it was started.")
    # A policy run's follow-ups, copied from the project when it was started.
    then_audit = models.CharField(max_length=4, blank=True, default="")
    then_shadow = models.BooleanField(default=False)
    # Sends of its task: the reaper sends a pending run again when the message was lost.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    dispatch_count = models.PositiveSmallIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    phase = models.CharField(max_length=10, choices=Phase.choices, default=Phase.QUEUED)
    config = models.JSONField(help_text="The TrainConfig this run trains with.")
    # Frozen when the run starts: [[image id, label name, split], ...].
    snapshot = models.JSONField(default=list, blank=True)
    snapshot_sha256 = models.CharField(max_length=64, blank=True)
    n_images = models.PositiveIntegerField(default=0)
    review_decisions = models.PositiveIntegerField(
        default=0, help_text="Review decisions standing since the previous successful run began."
    )
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    epochs = models.JSONField(default=list, blank=True, help_text="Per-epoch metrics.")
    cancel_requested = models.BooleanField(default=False)
    error_message = models.TextField(blank=True)
    worker = models.CharField(max_length=255, blank=True, help_text="The worker running it.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    phase_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["project", "status"])]

    def __str__(self):
        return f"Training run {self.pk} of {self.project.slug}"

    def get_absolute_url(self):
        return reverse("training-run", kwargs={"pk": self.pk})

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def progress_percent(self) -> int:
        if not self.progress_total:
            return 0
        return min(100, round(100 * self.progress_done / self.progress_total))

    @property
    def duration(self) -> timedelta | None:
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    @property
    def remaining(self) -> timedelta | None:
        """The rest of the current phase, extrapolated from its pace so far."""
        if self.is_finished or not (self.phase_started_at and self.progress_done):
            return None
        left = max(0, self.progress_total - self.progress_done)
        return (timezone.now() - self.phase_started_at) * left / self.progress_done


class ModelVersion(models.Model):
    """A trained model: artifacts with their sha256, metrics, and its place in the rollout."""

    class Stage(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        SHADOW = "shadow", "Shadow"
        LIMITED = "limited", "Limited"
        LIVE = "live", "Live"
        RETIRED = "retired", "Retired"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    number = models.PositiveIntegerField()
    run = models.OneToOneField(
        TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="version"
    )
    stage = models.CharField(max_length=10, choices=Stage.choices, default=Stage.CANDIDATE)
    # Relative to MEDIA_ROOT.
    export_file = models.CharField(max_length=255)
    export_sha256 = models.CharField(max_length=64)
    weights_file = models.CharField(max_length=255)
    weights_sha256 = models.CharField(max_length=64)
    # The ONNX export, served by ONNX Runtime when it passed the parity check (onnx_error "").
    onnx_file = models.CharField(max_length=255, blank=True)
    onnx_sha256 = models.CharField(max_length=64, blank=True)
    onnx_spec = models.JSONField(
        default=dict, blank=True, help_text="Its preprocessing: size, resize, normalisation."
    )
    onnx_max_prob_diff = models.FloatField(
        null=True, blank=True, help_text="Largest probability difference from fastai's."
    )
    onnx_parity_images = models.PositiveIntegerField(default=0)
    onnx_error = models.TextField(blank=True, help_text="Why it is served by torch instead.")
    config = models.JSONField()
    vocab = models.JSONField(help_text="Class names in the model's output order.")
    metrics = models.JSONField(default=dict)
    confusion_matrix = models.JSONField(
        default=list, help_text="Rows: actual, columns: predicted, in vocab order."
    )
    pretrained = models.BooleanField(default=False)
    pretrained_note = models.CharField(max_length=255, blank=True)
    snapshot_sha256 = models.CharField(max_length=64, blank=True)
    n_scored = models.PositiveIntegerField(default=0)
    # Rollout: the share of prediction traffic it serves (limited: 1-99, live: 100).
    traffic_share = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    paused_reason = models.TextField(
        blank=True, help_text="Why a guardrail paused this limited version; empty: not paused."
    )
    # Out-of-domain score threshold, calibrated on the version's validation images.
    ood_method = models.CharField(max_length=20, blank=True)
    ood_threshold = models.FloatField(null=True, blank=True)
    # Scores never change once written, so the review progress adds these up instead of
    # counting the flagged scores of a large version on every decision. None: not counted.
    flag_counts = models.JSONField(
        null=True,
        blank=True,
        help_text="Flagged scores as [label id, predicted id, split, count] rows.",
    )
    # Labeling: the k-means centres of its unlabeled images' embeddings, so an image that
    # arrives later joins the nearest cluster of the diverse order.
    suggestion_centres = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="version_unique_number"),
            # Rollout: at most one live and one limited version per project.
            models.UniqueConstraint(
                fields=["project", "stage"],
                condition=Q(stage__in=["live", "limited"]),
                name="version_one_live_one_limited",
            ),
        ]

    def __str__(self):
        return f"{self.project.slug} v{self.number}"

    def get_absolute_url(self):
        return reverse("model-version", kwargs={"pk": self.pk})

    def artifact_path(self, which: str = "export") -> Path:
        """The exported learner ("export"), the weights ("weights") or the ONNX model ("onnx")
        in MEDIA_ROOT."""
        names = {"export": self.export_file, "weights": self.weights_file, "onnx": self.onnx_file}
        return Path(settings.MEDIA_ROOT) / names[which]

    @property
    def onnx_servable(self) -> bool:
        """An ONNX export that passed its parity check: ONNX Runtime may serve it."""
        return bool(self.onnx_file and self.onnx_sha256 and self.onnx_spec and not self.onnx_error)

    @property
    def awaits_approval(self) -> bool:
        """A candidate, or a candidate the retraining policy put into shadow unapproved."""
        if self.stage == self.Stage.CANDIDATE:
            return True
        return (
            self.stage == self.Stage.SHADOW
            and not self.rollout_events.filter(to_stage=self.Stage.APPROVED).exists()
        )

    @property
    def label(self) -> str:
        return f"v{self.number}"

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy")

    @property
    def error_rate(self) -> float | None:
        return self.metrics.get("error_rate")


class ImageScore(models.Model):
    """One image scored by one model version: loss, prediction and confidence."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="scores")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="scores")
    label = models.ForeignKey(
        Category,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The image's label when it was scored.",
    )
    predicted = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    confidence = models.FloatField()
    loss = models.FloatField(null=True, blank=True)
    probabilities = models.JSONField(help_text="In the version's vocab order.")
    split = models.CharField(max_length=5, choices=Image.Split.choices)
    in_training = models.BooleanField(
        help_text="The model was fit on this image, so its loss is in-sample."
    )
    flagged = models.BooleanField(
        default=False,
        help_text="Predicted another class, or gave the label less than even odds.",
    )

    class Meta:
        ordering = ["-loss"]
        constraints = [
            models.UniqueConstraint(fields=["version", "image"], name="score_unique_image")
        ]
        indexes = [
            models.Index(fields=["version", "-loss", "id"]),
            models.Index(fields=["version", "label", "split", "-loss", "id"]),
            models.Index(fields=["version", "split", "-loss", "id"]),
            # The review progress counts flagged scores, then those a person decided on.
            models.Index(
                fields=["version", "label", "split", "image"],
                condition=Q(flagged=True),
                name="score_flagged_idx",
            ),
        ]

    def __str__(self):
        return f"{self.version} on image {self.image_id}"

    @property
    def is_correct(self) -> bool:
        return self.label_id is not None and self.label_id == self.predicted_id


class BackboneWeights(models.Model):
    """The ImageNet weights file of one architecture in Loupe's shared storage."""

    class Origin(models.TextChoices):
        FETCHED = "fetched", "Fetched"
        IMPORTED = "imported", "Imported"
        TORCH_CACHE = "torch_cache", "Copied from the torch cache"

    architecture = models.CharField(max_length=40, unique=True)
    file = models.CharField(max_length=255, help_text="Relative to MEDIA_ROOT.")
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    origin = models.CharField(max_length=12, choices=Origin.choices)
    source = models.CharField(max_length=500, help_text="The URL or file it came from.")
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["architecture"]
        verbose_name_plural = "backbone weights"

    def __str__(self):
        return f"{self.architecture} weights ({self.sha256[:12]})"

    @property
    def filename(self) -> str:
        return self.file.rsplit("/", 1)[-1]


class WeightsFetch(models.Model):
    """A background download of one architecture's weights, asked for on the Backbones page."""

    class Status(models.TextChoices):
        PENDING = "pending", "Queued"
        RUNNING = "running", "Downloading"
        SUCCEEDED = "succeeded", "Done"
        FAILED = "failed", "Failed"

    FINISHED = (Status.SUCCEEDED, Status.FAILED)

    architecture = models.CharField(max_length=40)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    progress_done = models.PositiveBigIntegerField(default=0)
    progress_total = models.PositiveBigIntegerField(default=0)
    error_message = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["architecture", "status"])]

    def __str__(self):
        return f"Fetch of {self.architecture} weights ({self.get_status_display()})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def progress_percent(self) -> int:
        if not self.progress_total:
            return 0
        return min(100, round(100 * self.progress_done / self.progress_total))
