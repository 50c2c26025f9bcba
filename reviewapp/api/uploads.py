"""Upload batches: an upload too big for the request, ingested by a worker; its progress
and, once done, a result per file."""

from datetime import datetime

from django.http import Http404
from ninja import Router, Schema

from ..models import UploadBatch
from .auth import require_perm
from .common import absolute_reverse, api_enum, db_id
from .errors import ERROR_RESPONSES
from .training import ProgressOut

__all__ = ["IngestResultOut", "router", "upload_batch_out", "upload_batch_url"]

router = Router(tags=["images"])

RESULT_STATUSES = ("imported", "duplicate", "rejected")  # IngestResult.status values
BatchStatus = api_enum(UploadBatch.Status, "UploadBatchStatus")


class IngestResultOut(Schema):
    name: str
    status: str  # imported | duplicate | rejected
    reason: str
    image_id: int | None
    label: str


class UploadBatchOut(Schema):
    id: int
    project: str  # the project's slug
    status: BatchStatus
    progress: ProgressOut
    label: str | None  # the category every image gets; null: unlabeled or from folders
    labels_from_folders: bool
    error_message: str
    results: list[IngestResultOut]  # empty until the batch has succeeded
    imported: int
    duplicates: int
    rejected: int
    created_by: str | None  # username
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    url: str | None
    page_url: str | None  # the batch's page in the browser


def upload_batch_url(request, batch: UploadBatch) -> str | None:
    return absolute_reverse(request, "api:upload_batch_detail", batch_id=batch.pk)


def upload_batch_out(request, batch: UploadBatch) -> dict:
    results = batch.results or []
    counts = {s: sum(r.get("status") == s for r in results) for s in RESULT_STATUSES}
    return {
        "id": batch.pk,
        "project": batch.project.slug,
        "status": batch.status,
        "progress": {
            "done": batch.progress_done,
            "total": batch.progress_total,
            "percent": batch.progress_percent,
        },
        "label": batch.label.name if batch.label_id else None,
        "labels_from_folders": batch.labels_from_folders,
        "error_message": batch.error_message,
        "results": results,
        "imported": counts["imported"],
        "duplicates": counts["duplicate"],
        "rejected": counts["rejected"],
        "created_by": batch.created_by.get_username() if batch.created_by else None,
        "created_at": batch.created_at,
        "started_at": batch.started_at,
        "finished_at": batch.finished_at,
        "url": upload_batch_url(request, batch),
        "page_url": absolute_reverse(request, "upload-batch", pk=batch.pk),
    }


@router.get("/upload-batches/{batch_id}", response={200: UploadBatchOut, **ERROR_RESPONSES})
def upload_batch_detail(request, batch_id: int):
    """One upload batch: its status, progress and, once it has succeeded, each file's result."""
    require_perm(request, "reviewapp.view_project", "view projects")
    batch = (
        UploadBatch.objects.select_related("project", "label", "created_by")
        .filter(pk=db_id(batch_id))
        .first()
    )
    if batch is None:
        raise Http404(f"No upload batch {batch_id}.")
    return upload_batch_out(request, batch)
