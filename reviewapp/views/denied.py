"""The 403 page: which permission the action needs, which group grants it, the project nav."""

import re

from django.contrib.auth.models import Group, Permission
from django.shortcuts import render

from ..models import (
    Image,
    LabelAudit,
    ModelVersion,
    Prediction,
    Project,
    TrainingRun,
    UploadBatch,
    Webhook,
)

__all__ = ["permission_denied"]

# A URL's <int:pk> names a row of this model, whose project the nav belongs to.
_PK_MODELS = (
    ("image-", Image),
    ("training-run", TrainingRun),
    ("model-version", ModelVersion),
    ("label-audit", LabelAudit),
    ("webhook-", Webhook),
    ("upload-batch", UploadBatch),
    ("prediction-", Prediction),
)
_PERM_IN_MESSAGE = re.compile(r"'(\w+\.\w+)'")


def permission_denied(request, exception=None):
    """handler403: say what is missing and who has it, under the project's own header."""
    message = str(exception or "")
    perm = getattr(exception, "perm", None)
    if perm is None and (found := _PERM_IN_MESSAGE.search(message)):
        perm = found.group(1)
    user = request.user
    context = {"exception": message, "perm": perm, "project": None}
    if perm:
        context.update(_who_has(user, perm))
    if user.is_authenticated and user.has_perm("reviewapp.view_project"):
        context["project"] = _project_of(request)
    return render(request, "403.html", context, status=403)


def _who_has(user, perm: str) -> dict:
    app_label, _, codename = perm.partition(".")
    permission = Permission.objects.filter(
        content_type__app_label=app_label, codename=codename
    ).first()
    granting = list(
        Group.objects.filter(permissions=permission).order_by("name").values_list("name", flat=True)
        if permission
        else []
    )
    mine = list(user.groups.order_by("name").values_list("name", flat=True)) if user.pk else []
    return {
        "perm_name": permission.name if permission else "",
        "granting_groups": granting,
        "my_groups": mine,
        "has_perm": user.has_perm(perm),
    }


def _project_of(request) -> Project | None:
    match = request.resolver_match
    if match is None:
        return None
    if slug := match.kwargs.get("slug"):
        return Project.objects.filter(slug=slug).first()
    pk = match.kwargs.get("pk")
    for prefix, model in _PK_MODELS:
        if pk is not None and (match.url_name or "").startswith(prefix):
            project_id = model.objects.filter(pk=pk).values_list("project_id", flat=True).first()
            return Project.objects.filter(pk=project_id).first() if project_id else None
    return None
