"""URLs of the browser pages; the API and /healthz are routed in reviewapp/urls.py."""

from django.contrib.auth import views as auth_views
from django.urls import path

from . import (
    accounts,
    activity,
    audits,
    backbones,
    categories,
    exports,
    focus,
    images,
    labeling,
    media,
    notifications,
    predict,
    preferences,
    projects,
    review,
    rollout,
    second_opinion,
    training,
    uploads,
    versions,
    webhooks,
)

urlpatterns = [
    # Accounts
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/tokens/", accounts.api_tokens, name="api-tokens"),
    path("account/tokens/new", accounts.api_token_create, name="api-token-create"),
    path("account/tokens/<int:pk>/revoke", accounts.api_token_revoke, name="api-token-revoke"),
    path("account/auto-advance", preferences.reviewer_auto_advance, name="reviewer-auto-advance"),
    # Notifications: the user's own, with the bell in the header
    path("notifications/", notifications.notification_list, name="notifications"),
    path("notifications/bell", notifications.notifications_bell, name="notifications-bell"),
    path(
        "notifications/read-all",
        notifications.notifications_read_all,
        name="notifications-read-all",
    ),
    path(
        "notifications/preferences",
        notifications.notification_preferences,
        name="notification-preferences",
    ),
    path("notifications/<int:pk>/open", notifications.notification_open, name="notification-open"),
    # ImageNet weights for every project's training
    path("backbones/", backbones.backbone_list, name="backbone-list"),
    path("backbones/import", backbones.backbone_import, name="backbone-import"),
    path("backbones/<str:architecture>/fetch", backbones.backbone_fetch, name="backbone-fetch"),
    path("backbones/fetches/<int:pk>/", backbones.weights_fetch_status, name="weights-fetch"),
    # Projects
    path("", projects.project_list, name="project-list"),
    path("projects/new", projects.project_create, name="project-create"),
    path("projects/demo", projects.demo_project_create, name="demo-project-create"),
    path("p/<slug:slug>/", projects.project_detail, name="project-detail"),
    path("p/<slug:slug>/settings/", projects.project_settings, name="project-settings"),
    path(
        "p/<slug:slug>/settings/policy",
        projects.project_retrain_policy,
        name="project-retrain-policy",
    ),
    # Images
    path("p/<slug:slug>/images/", images.image_browser, name="image-browser"),
    path("images/<int:pk>/", images.image_detail, name="image-detail"),
    path("p/<slug:slug>/focus/<int:pk>/", focus.image_focus, name="image-focus"),
    path("images/<int:pk>/file", media.image_file, name="image-file"),
    path("images/<int:pk>/thumbnail", media.image_thumbnail, name="image-thumbnail"),
    # Categories
    path("p/<slug:slug>/categories/", categories.category_list, name="category-list"),
    path("p/<slug:slug>/categories/new", categories.category_create, name="category-create"),
    path(
        "p/<slug:slug>/categories/<int:pk>/edit",
        categories.category_update,
        name="category-update",
    ),
    path(
        "p/<slug:slug>/categories/<int:pk>/delete",
        categories.category_delete,
        name="category-delete",
    ),
    path(
        "p/<slug:slug>/categories/<int:pk>/merge/",
        categories.category_merge,
        name="category-merge",
    ),
    # Uploads
    path("p/<slug:slug>/upload/", uploads.image_upload, name="image-upload"),
    path("uploads/<int:pk>/", uploads.upload_batch, name="upload-batch"),
    # Training
    path("p/<slug:slug>/train/", training.training_run_start, name="training-run-start"),
    path("p/<slug:slug>/runs/", training.training_run_list, name="training-run-list"),
    path("p/<slug:slug>/retrain", training.training_run_retrain, name="training-run-retrain"),
    path("runs/<int:pk>/", training.training_run_detail, name="training-run"),
    path("runs/<int:pk>/cancel", training.training_run_cancel, name="training-run-cancel"),
    # Labeling new images
    path("p/<slug:slug>/label/", labeling.label_queue, name="label-queue"),
    path("p/<slug:slug>/label/accept", labeling.label_accept, name="label-accept"),
    path(
        "p/<slug:slug>/label/accept-above",
        labeling.label_accept_above,
        name="label-accept-above",
    ),
    path("p/<slug:slug>/label/renew", labeling.label_claims_renew, name="label-claims-renew"),
    path("p/<slug:slug>/label/release", labeling.label_claims_release, name="label-claims-release"),
    # Review
    path("p/<slug:slug>/review/", review.review_queue, name="review-queue"),
    path("p/<slug:slug>/review/bulk", review.review_bulk, name="review-bulk"),
    path("p/<slug:slug>/review/renew", review.review_claims_renew, name="review-claims-renew"),
    path(
        "p/<slug:slug>/review/release", review.review_claims_release, name="review-claims-release"
    ),
    path(
        "p/<slug:slug>/second-opinion/",
        second_opinion.second_opinion_queue,
        name="second-opinion-queue",
    ),
    path(
        "second-opinions/<int:pk>/resolve",
        second_opinion.second_opinion_resolve,
        name="second-opinion-resolve",
    ),
    path("images/<int:pk>/decide", review.image_decide, name="image-decide"),
    path("images/<int:pk>/undo", review.image_undo, name="image-undo"),
    path("p/<slug:slug>/activity/", activity.project_activity, name="project-activity"),
    path("p/<slug:slug>/trash/", activity.project_trash, name="project-trash"),
    path("p/<slug:slug>/export.zip", exports.dataset_zip, name="dataset-export-zip"),
    path("p/<slug:slug>/export.csv", exports.dataset_csv, name="dataset-export-csv"),
    # Model versions
    path("p/<slug:slug>/models/", versions.model_version_list, name="model-version-list"),
    path("models/<int:pk>/", versions.model_version_detail, name="model-version"),
    path("models/<int:pk>/compare/", versions.model_version_compare, name="model-version-compare"),
    path("models/<int:pk>/model.onnx", versions.model_version_onnx, name="model-version-onnx"),
    path(
        "models/<int:pk>/model.onnx.json",
        versions.model_version_onnx_spec,
        name="model-version-onnx-spec",
    ),
    # Approval and rollout
    path(
        "models/<int:pk>/approval/",
        rollout.model_version_approval,
        name="model-version-approval",
    ),
    path("models/<int:pk>/stage", rollout.model_version_stage, name="model-version-stage"),
    path("p/<slug:slug>/rollout/", rollout.project_rollout, name="project-rollout"),
    path(
        "p/<slug:slug>/rollout/policy",
        rollout.project_rollout_policy,
        name="project-rollout-policy",
    ),
    path("p/<slug:slug>/rollback", rollout.project_rollback, name="project-rollback"),
    # Serving: predict, client tokens, prediction review, monitoring
    path("p/<slug:slug>/predict/", predict.project_predict, name="project-predict"),
    path("p/<slug:slug>/clients/", predict.client_tokens, name="client-tokens"),
    path("p/<slug:slug>/clients/new", predict.client_token_create, name="client-token-create"),
    path(
        "p/<slug:slug>/clients/<int:pk>/revoke",
        predict.client_token_revoke,
        name="client-token-revoke",
    ),
    path(
        "p/<slug:slug>/predictions/review/",
        predict.prediction_review,
        name="prediction-review",
    ),
    path("predictions/<int:pk>/decide", predict.prediction_decide, name="prediction-decide"),
    path("predictions/<int:pk>/file", predict.prediction_file, name="prediction-file"),
    path("p/<slug:slug>/monitoring/", predict.project_monitoring, name="project-monitoring"),
    # Label audits: out-of-fold scoring and its three review queues
    path("p/<slug:slug>/audits/", audits.label_audit_list, name="label-audit-list"),
    path("p/<slug:slug>/audits/new", audits.label_audit_start, name="label-audit-start"),
    path("audits/<int:pk>/", audits.label_audit_detail, name="label-audit"),
    path("audits/<int:pk>/cancel", audits.label_audit_cancel, name="label-audit-cancel"),
    path(
        "audits/<int:pk>/issues/",
        audits.label_audit_queue,
        {"queue": "issues"},
        name="label-audit-issues",
    ),
    path(
        "audits/<int:pk>/duplicates/",
        audits.label_audit_queue,
        {"queue": "duplicates"},
        name="label-audit-duplicates",
    ),
    path(
        "audits/<int:pk>/outliers/",
        audits.label_audit_queue,
        {"queue": "outliers"},
        name="label-audit-outliers",
    ),
    # Webhooks: signed POSTs of a project's events, for approvers
    path("p/<slug:slug>/webhooks/", webhooks.project_webhooks, name="project-webhooks"),
    path("p/<slug:slug>/webhooks/new", webhooks.webhook_create, name="webhook-create"),
    path("webhooks/<int:pk>/edit", webhooks.webhook_update, name="webhook-update"),
    path("webhooks/<int:pk>/delete", webhooks.webhook_delete, name="webhook-delete"),
    path("webhooks/<int:pk>/deliveries/", webhooks.webhook_deliveries, name="webhook-deliveries"),
]
