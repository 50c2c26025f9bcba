"""Uploads: small ones are ingested in the request, big ones by a Celery task with progress."""

from collections import Counter

from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from .. import services
from ..archives import is_zip
from ..forms import TARGET_FOLDERS, TARGET_UNLABELED, UploadForm
from ..models import UploadBatch
from .common import login_required, project_for, render_page, require_perm

__all__ = ["image_upload", "upload_batch"]

RESULT_STATUSES = ("imported", "duplicate", "rejected")
# The result list of a huge batch is cut here; the counts above it stay exact.
MAX_RESULT_ROWS = 1000


def _looks_like_zip(upload) -> bool:
    return upload.name.lower().endswith(".zip") or is_zip(upload)


def result_summary(results: list[dict]) -> list[tuple[str, int]]:
    """(status, count) for each status, in a fixed order, zeros included."""
    counts = Counter(r.get("status", "") for r in results)
    return [(status, counts[status]) for status in RESULT_STATUSES]


@require_http_methods(["GET", "POST"])
@login_required
def image_upload(request, slug):
    project = project_for(request, slug, "reviewapp.add_image")
    categories = list(project.categories.all())
    results = None
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES, project=project, categories=categories)
        if form.is_valid():
            files = form.cleaned_data["files"]
            if form.labels_from_folders and not any(_looks_like_zip(f) for f in files):
                form.add_error("target", "Folder names come from a .zip: add one, or pick a label.")
            elif form.labels_from_folders and not request.user.has_perm("reviewapp.add_category"):
                form.add_error("target", "Folder names make new categories, which you cannot add.")
            else:
                uploads = [(f.name, f) for f in files]
                options = {
                    "project": project,
                    "uploads": uploads,
                    "label": form.label,
                    "labels_from_folders": form.labels_from_folders,
                    "actor": request.user,
                }
                # Few, small, plain images: ingest now. Any .zip goes to a worker, with progress.
                if not services.uploads_fit_inline(uploads, archives_inline=False):
                    batch = services.upload_batch_create(**options)
                    return redirect(batch)
                results = [r.as_dict() for r in services.uploads_ingest(**options)]
                # A fresh form for the next upload, aimed at the same label.
                form = UploadForm(
                    project=project,
                    categories=categories,
                    initial={"target": form.cleaned_data["target"]},
                )
    else:
        target = request.GET.get("label", TARGET_UNLABELED)
        form = UploadForm(project=project, categories=categories, initial={"target": target})
    context = {
        "project": project,
        "upload_form": form,
        "results": results,
        "summary": result_summary(results) if results is not None else None,
        "target_folders": TARGET_FOLDERS,
    }
    return render(request, "reviewapp/image_upload.html", context)


@require_GET
@login_required
def upload_batch(request, pk):
    require_perm(request.user, "reviewapp.view_project")
    batch = get_object_or_404(
        UploadBatch.objects.select_related("project", "label", "created_by"), pk=pk
    )
    show = request.GET.get("show", "")
    results = batch.results or []
    shown = [r for r in results if r.get("status") == show] if show in RESULT_STATUSES else results
    context = {
        "project": batch.project,
        "batch": batch,
        "summary": result_summary(results),
        "results": shown[:MAX_RESULT_ROWS],
        "results_cut": max(0, len(shown) - MAX_RESULT_ROWS),
        "show": show if show in RESULT_STATUSES else "",
    }
    return render_page(request, "reviewapp/upload_batch.html", "upload-progress", context)
