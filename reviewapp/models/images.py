"""Images, their audit log of label decisions, and the upload batches that bring them in."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse

from .projects import Category, Project, Split


def image_upload_to(instance, filename):
    return f"images/{instance.project_id}/{instance.sha256[:2]}/{filename}"


def thumbnail_upload_to(instance, filename):
    return f"thumbs/{instance.project_id}/{instance.sha256[:2]}/{filename}"


class Image(models.Model):
    Split = Split  # projects.py owns it: a project's split_for decides an image's split

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
