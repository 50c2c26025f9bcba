"""Projects and their classes: what every other model hangs from."""

import hashlib

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse


class Split(models.TextChoices):
    """Which side of the train/validation split an image is on (``Image.Split``)."""

    TRAIN = "train", "Train"
    VALID = "valid", "Valid"


def split_for(sha256: str, *, seed: int, valid_pct: float) -> str:
    """The deterministic train/valid split of an image, from its hash and the seed."""
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return Split.VALID if fraction < valid_pct else Split.TRAIN


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
