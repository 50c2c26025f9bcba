"""Loupe's data model: projects, categories, images and their audit log."""

import hashlib
import secrets
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

__all__ = [
    "ApiToken",
    "BackboneWeights",
    "Category",
    "ClientToken",
    "Image",
    "ImageScore",
    "LabelEvent",
    "ModelVersion",
    "Prediction",
    "Project",
    "QueueClaim",
    "RolloutEvent",
    "Suggestion",
    "TrainingRun",
    "UploadBatch",
    "WeightsFetch",
    "split_for",
]


def split_for(sha256: str, *, seed: int, valid_pct: float) -> str:
    """The deterministic train/valid split of an image, from its hash and the seed."""
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return Image.Split.VALID if fraction < valid_pct else Image.Split.TRAIN


class Project(models.Model):
    class ResizeMethod(models.TextChoices):
        CROP = "crop", "Crop (centre crop to a square)"
        PAD = "pad", "Pad (zero padding, keeps everything)"
        SQUISH = "squish", "Squish (stretch to a square)"
        RANDOM_RESIZED_CROP = "random_resized_crop", "Random resized crop"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    description = models.TextField(blank=True)
    # The DataBlock choices the trainer uses.
    image_size = models.PositiveIntegerField(
        default=224, validators=[MinValueValidator(16), MaxValueValidator(1024)]
    )
    resize_method = models.CharField(
        max_length=32, choices=ResizeMethod.choices, default=ResizeMethod.RANDOM_RESIZED_CROP
    )
    augment = models.BooleanField(
        default=True, help_text="Apply fastai's aug_transforms to training batches."
    )
    valid_pct = models.FloatField(
        default=0.2,
        validators=[MinValueValidator(0.05), MaxValueValidator(0.5)],
        help_text="Share of images held out for validation.",
    )
    split_seed = models.PositiveIntegerField(
        default=42, help_text="Seed of the train/valid split; the same seed gives the same split."
    )
    # Serving and rollout policy.
    review_confidence = models.FloatField(
        default=0.6,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Live predictions less confident than this go to reviewers.",
    )
    approval_coverage = models.FloatField(
        default=0.8,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of a version's flagged images that must be reviewed before approval "
        "without an override reason.",
    )
    rollout_steps = models.CharField(
        max_length=100,
        default="5,25,50,100",
        help_text="Traffic shares (percent) a limited version is expanded through.",
    )
    max_shadow_disagreement = models.FloatField(
        default=0.2,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Guardrail: share of requests where shadow and live disagree.",
    )
    max_override_rate = models.FloatField(
        default=0.2,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Guardrail: share of reviewed predictions that reviewers corrected.",
    )
    max_low_confidence = models.FloatField(
        default=0.3,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Guardrail: share of predictions below the review confidence.",
    )
    # Labeling: how many cards a labeler claims at once, and for how long.
    claim_size = models.PositiveIntegerField(
        default=20,
        validators=[MinValueValidator(1), MaxValueValidator(200)],
        help_text="Cards of the Label queue a labeler claims at once.",
    )
    claim_minutes = models.PositiveIntegerField(
        default=15,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 60)],
        help_text="Minutes a claim lasts without activity before others get the cards.",
    )
    # Teams: the review guards a project can ask for.
    approval_tolerance = models.FloatField(
        default=0.01,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text=(
            "Approving a version whose accuracy is below the live one's by more than this "
            "(0.01 = 1 point) needs a written reason."
        ),
    )
    second_opinion = models.BooleanField(
        default=False,
        help_text="A relabel waits in the Second opinion queue until another reviewer agrees.",
    )
    # Retraining policy (reviewapp.policy): off while both thresholds are empty.
    retrain_after_decisions = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Retrain after this many review decisions since the latest version's data.",
    )
    retrain_after_images = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Retrain after this many newly labeled images (labeling included).",
    )
    retrain_min_hours = models.PositiveIntegerField(
        default=24,
        validators=[MaxValueValidator(24 * 365)],
        help_text="At most one policy run per this many hours.",
    )
    retrain_audit = models.CharField(
        max_length=4,
        blank=True,
        default="",
        choices=[("", "No audit"), ("fast", "Fast audit"), ("full", "Full audit")],
        help_text="Audit the labels with the new version after a policy run.",
    )
    retrain_shadow = models.BooleanField(
        default=False,
        help_text="Put the new version into shadow when it beats the live one on validation.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        permissions = [("approve_model", "Can approve and roll out model versions")]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("project-detail", kwargs={"slug": self.slug})

    def split_for(self, sha256: str) -> str:
        return split_for(sha256, seed=self.split_seed, valid_pct=self.valid_pct)

    @property
    def retrain_policy_on(self) -> bool:
        return bool(self.retrain_after_decisions or self.retrain_after_images)


hotkey_validator = RegexValidator(
    r"^[0-9a-z]$", "A hotkey is one digit (0-9) or one lower-case letter."
)


class Category(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="categories")
    name = models.CharField(max_length=100)
    position = models.PositiveIntegerField(default=0)
    hotkey = models.CharField(max_length=1, blank=True, validators=[hotkey_validator])

    class Meta:
        ordering = ["position", "name"]
        verbose_name_plural = "categories"
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="category_unique_name"),
            models.UniqueConstraint(
                fields=["project", "hotkey"],
                condition=~Q(hotkey=""),
                name="category_unique_hotkey",
            ),
        ]

    def __str__(self):
        return self.name


def image_upload_to(instance, filename):
    return f"images/{instance.project_id}/{instance.sha256[:2]}/{filename}"


def thumbnail_upload_to(instance, filename):
    return f"thumbs/{instance.project_id}/{instance.sha256[:2]}/{filename}"


class Image(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        VALID = "valid", "Valid"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        DELETED = "deleted", "Deleted"

    class Source(models.TextChoices):
        UPLOAD = "upload", "Upload"
        IMPORT = "import", "Import"
        PRODUCTION = "production", "Production"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="images")
    file = models.FileField(upload_to=image_upload_to, max_length=255)
    thumbnail = models.FileField(upload_to=thumbnail_upload_to, max_length=255)
    sha256 = models.CharField(max_length=64)
    original_name = models.CharField(max_length=255, blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=16, help_text="The real format Pillow decoded.")
    # RESTRICT: a category with images cannot be deleted alone (merge it), but deleting
    # the whole project takes both.
    label = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.RESTRICT, related_name="images"
    )
    split = models.CharField(max_length=5, choices=Split.choices)
    status = models.CharField(max_length=7, choices=Status.choices, default=Status.ACTIVE)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.UPLOAD)
    revision = models.PositiveIntegerField(
        default=1, help_text="Raised on every change; a stale revision is refused."
    )
    reviewed_at = models.DateTimeField(
        null=True, blank=True, help_text="When a person last decided on it (undo clears it)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "sha256"], name="image_unique_sha256"),
        ]
        indexes = [
            models.Index(
                fields=["project"],
                condition=Q(reviewed_at__isnull=False),
                name="image_reviewed_idx",
            ),
            # Browser filters page by id within these; the counts group by them.
            models.Index(fields=["project", "status", "label", "split", "id"]),
            models.Index(fields=["project", "status", "split", "id"]),
            models.Index(fields=["project", "status", "id"]),
        ]

    def __str__(self):
        return f"{self.project.slug}#{self.pk}"

    def get_absolute_url(self):
        return reverse("image-detail", kwargs={"pk": self.pk})


class LabelEvent(models.Model):
    """One change of an image's label or status; written in the same transaction."""

    class Action(models.TextChoices):
        IMPORT = "import", "Import"
        LABEL = "label", "Label"
        RELABEL = "relabel", "Relabel"
        CONFIRM = "confirm", "Confirm"
        DELETE = "delete", "Delete"
        RESTORE = "restore", "Restore"
        UNDO = "undo", "Undo"

    # A person's review decisions; undo reverts the latest one still standing.
    DECISIONS = (Action.LABEL, Action.RELABEL, Action.CONFIRM, Action.DELETE, Action.RESTORE)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="label_events")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="label_events",
    )
    action = models.CharField(max_length=10, choices=Action.choices)
    from_category = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    to_category = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Someone else who held the card's queue claim when this decision was made.",
    )
    version = models.ForeignKey(
        "ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="decisions",
        help_text="The model version whose review queue the decision was made in.",
    )
    undo_of = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="undone_by",
        help_text="The decision this undo reverted; each decision is undone at most once.",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["image", "-id"]),
            models.Index(fields=["project", "-id"]),
            models.Index(fields=["project", "actor", "-id"]),
        ]

    def __str__(self):
        return f"{self.get_action_display()} image {self.image_id}"


class UploadBatch(models.Model):
    """A browser upload too big to handle in the request; a Celery task ingests it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="upload_batches")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    label = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    labels_from_folders = models.BooleanField(default=False)
    staging_dir = models.CharField(max_length=255)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    results = models.JSONField(default=list, blank=True)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "upload batches"

    def __str__(self):
        return f"Upload {self.pk} to {self.project.slug}"

    def get_absolute_url(self):
        return reverse("upload-batch", kwargs={"pk": self.pk})

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.SUCCEEDED, self.Status.FAILED}

    @property
    def progress_percent(self) -> int:
        if not self.progress_total:
            return 0
        return round(100 * self.progress_done / self.progress_total)


class ApiToken(models.Model):
    """A personal API token; only its sha256 is stored, the token is shown once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(
        max_length=8, help_text="The token's first characters, to tell it apart."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @staticmethod
    def generate_key() -> str:
        return "lp_" + secrets.token_urlsafe(32)


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


# Approval, rollout and serving ---------------------------------------------------------


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


class ClientToken(models.Model):
    """A prediction client's API token for one project; only its sha256 is stored."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="client_tokens")
    client = models.CharField(max_length=100, help_text="Who calls predict with it.")
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["client", "-created_at"]

    def __str__(self):
        return f"{self.project.slug}: {self.client} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @staticmethod
    def generate_key() -> str:
        return "lpc_" + secrets.token_urlsafe(32)


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


# Label audits: out-of-fold scoring, label issues, near-duplicates, outliers ---

__all__ += ["AuditScore", "LabelAudit"]


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


# Labeling new images ------------------------------------------------------------------


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


# Loop models live in their own modules; imported here so Django finds them.
from .notifications import Notification, NotificationPreference  # noqa: E402
from .teams import ReviewerPreference, SecondOpinion  # noqa: E402
from .webhooks import Webhook, WebhookDelivery  # noqa: E402

__all__ += [
    "Notification",
    "NotificationPreference",
    "ReviewerPreference",
    "SecondOpinion",
    "Webhook",
    "WebhookDelivery",
]
