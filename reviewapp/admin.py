"""Django admin: a window on the data for staff; changes that matter go through services."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from .models import (
    ApiToken,
    Category,
    Image,
    ImageScore,
    LabelEvent,
    ModelVersion,
    Project,
    TrainingRun,
    UploadBatch,
)


class CategoryInline(admin.TabularInline):
    model = Category
    fields = ("name", "hotkey", "position")
    extra = 0
    show_change_link = True


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "slug",
        "image_size",
        "resize_method",
        "augment",
        "valid_pct",
        "split_seed",
        "created_by",
        "created_at",
    )
    list_filter = ("resize_method", "augment")
    search_fields = ("name", "slug", "description")
    list_select_related = ("created_by",)
    raw_id_fields = ("created_by",)
    readonly_fields = ("created_at",)
    inlines = [CategoryInline]
    # Changing the seed or the share here would not re-split the images; the app's
    # settings page goes through services.project_update, which does.
    fieldsets = (
        (None, {"fields": ("name", "slug", "description", "created_by", "created_at")}),
        (
            "DataBlock (edit the split on the project's settings page)",
            {"fields": ("image_size", "resize_method", "augment", "valid_pct", "split_seed")},
        ),
        (
            "Retraining policy (off while both thresholds are empty)",
            {
                "fields": (
                    "retrain_after_decisions",
                    "retrain_after_images",
                    "retrain_min_hours",
                    "retrain_audit",
                    "retrain_shadow",
                )
            },
        ),
    )

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        return [*readonly, "valid_pct", "split_seed"] if obj else readonly


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "hotkey", "position")
    list_filter = ("project",)
    search_fields = ("name", "project__name")
    list_select_related = ("project",)
    autocomplete_fields = ("project",)
    ordering = ("project", "position", "name")


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "thumbnail_preview",
        "project",
        "label",
        "split",
        "status",
        "format",
        "width",
        "height",
        "source",
        "created_at",
    )
    list_display_links = ("id", "thumbnail_preview")
    list_filter = ("status", "split", "source", "format", "project")
    search_fields = ("=id", "=sha256", "original_name")
    list_select_related = ("project", "label")
    # 100,000s of rows: no full COUNT on every changelist page.
    show_full_result_count = False
    list_per_page = 100
    autocomplete_fields = ("project",)
    raw_id_fields = ("label",)
    # The label and status change only through services, which write the audit log.
    readonly_fields = (
        "thumbnail_preview",
        "project",
        "file",
        "thumbnail",
        "sha256",
        "width",
        "height",
        "format",
        "label",
        "split",
        "status",
        "source",
        "revision",
        "created_at",
        "updated_at",
    )
    fields = readonly_fields[:1] + ("original_name",) + readonly_fields[1:]

    @admin.display(description="Preview")
    def thumbnail_preview(self, obj):
        if not obj.pk:
            return "—"
        return format_html(
            '<img src="{}" alt="" style="max-height:64px;max-width:64px">',
            reverse("image-thumbnail", kwargs={"pk": obj.pk}),
        )

    def has_add_permission(self, request):
        return False  # images arrive through the upload page or the API: checked and hashed


@admin.register(LabelEvent)
class LabelEventAdmin(admin.ModelAdmin):
    """The audit log: readable, never editable."""

    list_display = (
        "created_at",
        "project",
        "image_link",
        "action",
        "from_category",
        "to_category",
        "actor",
    )
    list_filter = ("action", "project")
    search_fields = ("=image__id", "note", "actor__username")
    list_select_related = ("project", "image", "from_category", "to_category", "actor")
    raw_id_fields = ("image", "actor", "from_category", "to_category")
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="Image", ordering="image")
    def image_link(self, obj):
        return format_html(
            '<a href="{}">#{}</a>',
            reverse("image-detail", kwargs={"pk": obj.image_id}),
            obj.image_id,
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(UploadBatch)
class UploadBatchAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "project",
        "status",
        "progress_done",
        "progress_total",
        "created_by",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "project")
    search_fields = ("=id", "project__name", "created_by__username")
    list_select_related = ("project", "created_by")
    raw_id_fields = ("created_by", "label")
    autocomplete_fields = ("project",)
    readonly_fields = (
        "project",
        "created_by",
        "label",
        "labels_from_folders",
        "staging_dir",
        "status",
        "progress_done",
        "progress_total",
        "results",
        "error_message",
        "created_at",
        "started_at",
        "finished_at",
    )

    def has_add_permission(self, request):
        return False  # a batch needs its staged files; the upload page makes them


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "created_at", "last_used_at")
    search_fields = ("name", "=prefix", "user__username")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    # The hash is never shown or edited; a token is made on the API tokens page, key shown once.
    fields = ("name", "user", "prefix", "created_at", "last_used_at")
    readonly_fields = ("user", "prefix", "created_at", "last_used_at")

    def has_add_permission(self, request):
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Written by workers only: staff can look, not edit."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "project",
        "status",
        "phase",
        "trigger",
        "progress_done",
        "progress_total",
        "n_images",
        "worker",
        "created_by",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "trigger", "project")
    search_fields = ("=id", "project__name", "worker", "error_message", "reason")
    list_select_related = ("project", "created_by")
    # The frozen data list can hold 100,000 rows: its hash is enough here.
    exclude = ("snapshot",)


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "project", "stage", "accuracy", "pretrained", "created_at")
    list_filter = ("stage", "pretrained", "project")
    search_fields = ("project__name", "export_sha256")
    list_select_related = ("project",)

    def has_delete_permission(self, request, obj=None):
        return False  # versions are retired through the rollout, never deleted


@admin.register(ImageScore)
class ImageScoreAdmin(ReadOnlyAdmin):
    list_display = ("id", "version", "image", "label", "predicted", "confidence", "loss", "split")
    list_filter = ("split", "in_training")
    search_fields = ("=image__id",)
    list_select_related = ("version__project", "image__project", "label", "predicted")
    raw_id_fields = ("version", "image", "label", "predicted")
    show_full_result_count = False


# Approval and rollout: the audit of stage changes, never edited by hand.
from .models import RolloutEvent  # noqa: E402


@admin.register(RolloutEvent)
class RolloutEventAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "version",
        "from_stage",
        "to_stage",
        "traffic_share",
        "actor",
        "created_at",
    )
    list_filter = ("to_stage", "version__project")
    search_fields = ("version__project__slug", "reason")
    list_select_related = ("version__project", "actor")
    raw_id_fields = ("version", "actor")

    def has_delete_permission(self, request, obj=None):
        return False  # the rollout's audit trail


# Serving: client tokens and stored predictions, read-only for staff.
from .models import ClientToken, Prediction  # noqa: E402


@admin.register(ClientToken)
class ClientTokenAdmin(ReadOnlyAdmin):
    list_display = ("client", "project", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("project",)
    search_fields = ("client", "=prefix", "project__slug")
    list_select_related = ("project",)
    # The hash is never shown; tokens are made on the project's Clients page, key shown once.
    exclude = ("key_hash",)


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "project",
        "version",
        "stage",
        "is_shadow",
        "label",
        "confidence",
        "needs_review",
        "review",
        "created_at",
    )
    list_filter = ("is_shadow", "needs_review", "review", "stage", "project")
    search_fields = ("=request_id", "=sha256", "label")
    list_select_related = ("project", "version__project")
    raw_id_fields = ("version", "client", "user", "reviewed_label", "reviewed_by", "added_image")
    show_full_result_count = False


# Label audits: written by the audit jobs only.
from .models import AuditScore, LabelAudit  # noqa: E402


@admin.register(LabelAudit)
class LabelAuditAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "project",
        "version",
        "mode",
        "k",
        "status",
        "n_images",
        "estimated_issues",
        "created_at",
    )
    list_filter = ("status", "mode", "project")
    list_select_related = ("project", "version__project")
    exclude = ("snapshot",)  # the frozen data list can be long


@admin.register(AuditScore)
class AuditScoreAdmin(ReadOnlyAdmin):
    list_display = ("id", "audit", "image", "label", "predicted", "self_confidence", "is_issue")
    list_filter = ("is_issue", "leaks")
    search_fields = ("=image__id",)
    list_select_related = ("audit__project", "image__project", "label", "predicted")
    raw_id_fields = ("audit", "image", "label", "predicted")
    show_full_result_count = False


# ImageNet weights: a file is stored only after its checks (Backbones page, manage.py weights).
from .models import BackboneWeights, WeightsFetch  # noqa: E402


@admin.register(BackboneWeights)
class BackboneWeightsAdmin(ReadOnlyAdmin):
    list_display = ("architecture", "file", "size", "origin", "source", "added_by", "added_at")


@admin.register(WeightsFetch)
class WeightsFetchAdmin(ReadOnlyAdmin):
    list_display = ("architecture", "status", "progress_done", "progress_total", "created_at")
    list_filter = ("status", "architecture")
