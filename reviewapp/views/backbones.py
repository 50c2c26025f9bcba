"""The approvers' Backbones page: ImageNet weights present or not, fetch them, import a file."""

import tempfile
from pathlib import Path

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from .. import backbones
from ..forms import BackboneImportForm
from ..models import WeightsFetch
from .common import add_service_errors, is_htmx, login_required, render_page, require_perm

__all__ = ["backbone_fetch", "backbone_import", "backbone_list", "weights_fetch_status"]

PERM = "reviewapp.approve_model"


def _context(form=None) -> dict:
    from django.conf import settings

    return {
        "rows": backbones.backbone_rows(),
        "form": form or BackboneImportForm(),
        "offline": settings.LOUPE_OFFLINE,
        "mirror": settings.LOUPE_WEIGHTS_URL,
    }


def _row_context(architecture: str) -> dict:
    row = next(r for r in backbones.backbone_rows() if r.architecture == architecture)
    return {**_context(), "row": row}


@require_GET
@login_required
def backbone_list(request):
    require_perm(request.user, PERM)
    return render_page(request, "reviewapp/backbones.html", "backbone-table", _context())


@require_POST
@login_required
def backbone_fetch(request, architecture):
    require_perm(request.user, PERM)
    try:
        backbones.weights_fetch_create(architecture=architecture, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    if is_htmx(request):
        return render_page(
            request, "reviewapp/backbones.html", "backbone-row", _row_context(architecture)
        )
    return redirect("backbone-list")


@require_GET
@login_required
def weights_fetch_status(request, pk):
    """The row of a fetch job's architecture, polled while the job runs."""
    require_perm(request.user, PERM)
    job = get_object_or_404(WeightsFetch, pk=pk)
    return render_page(
        request, "reviewapp/backbones.html", "backbone-row", _row_context(job.architecture)
    )


@require_POST
@login_required
def backbone_import(request):
    require_perm(request.user, PERM)
    form = BackboneImportForm(request.POST, request.FILES)
    if form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            stored = _import_upload(request, form.cleaned_data["architecture"], upload)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(
                request,
                f"Imported {upload.name} for {stored.architecture} "
                f"(sha256 {stored.sha256[:12]}...).",
            )
            return redirect("backbone-list")
    # 200 with the form's errors: nothing was stored.
    return render(request, "reviewapp/backbones.html", _context(form))


def _import_upload(request, architecture: str, upload):
    if hasattr(upload, "temporary_file_path"):
        return backbones.backbone_import(
            architecture=architecture,
            source=Path(upload.temporary_file_path()),
            original_name=upload.name,
            actor=request.user,
        )
    # A small upload stays in memory; the checks read a file.
    with tempfile.NamedTemporaryFile(suffix=".pth") as tmp:
        for chunk in upload.chunks():
            tmp.write(chunk)
        tmp.flush()
        return backbones.backbone_import(
            architecture=architecture,
            source=Path(tmp.name),
            original_name=upload.name,
            actor=request.user,
        )
