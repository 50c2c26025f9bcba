"""Images: keyset-paged lists, multipart uploads (.zip included) and single images."""

from datetime import datetime

from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from ninja import Field, File, Form, Query, Router, Schema, Status, UploadedFile
from pydantic import field_validator

from .. import selectors, services
from ..models import Category, Image, Project
from .auth import require_perm
from .common import MAX_ID, absolute_reverse, db_id, project_or_404
from .errors import ERROR_RESPONSES, QUEUE_RESPONSES
from .uploads import IngestResultOut, UploadBatchOut, upload_batch_out, upload_batch_url

__all__ = ["image_out", "router"]

router = Router(tags=["images"])

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_STATUSES = ("imported", "duplicate", "rejected")  # IngestResult.status values


class ImageOut(Schema):
    id: int
    project: str  # the project's slug
    label: str | None  # category name; null when unlabeled
    split: Image.Split
    status: Image.Status
    source: Image.Source
    width: int
    height: int
    format: str
    sha256: str
    revision: int
    original_name: str
    created_at: datetime
    updated_at: datetime
    file_url: str | None
    thumbnail_url: str | None


class ImagePageOut(Schema):
    items: list[ImageOut]
    next: str | None = Field(description="URL of the next (older) page; null on the last page.")


class ImageFilters(Schema):
    label: str | None = Field(
        None, description="A category name, or 'none' for unlabeled images; omitted: any."
    )
    split: Image.Split | None = None
    status: Image.Status = Image.Status.ACTIVE
    before: int | None = Field(
        None, ge=1, le=MAX_ID, description="Cursor: only images with a smaller id."
    )
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)

    @field_validator("label", "split", "status", "before", mode="before")
    @classmethod
    def empty_means_omitted(cls, value, info):
        # A filter form sends "split=" for "any split"; treat it as not sent.
        if value == "":
            return cls.model_fields[info.field_name].default
        return value


class UploadOut(Schema):
    results: list[IngestResultOut]
    imported: int
    duplicates: int
    rejected: int


class UploadQueuedOut(Schema):
    batch: UploadBatchOut
    batch_url: str = Field(description="Where to follow the batch (also the Location header).")


def image_out(request, image: Image) -> dict:
    return {
        "id": image.pk,
        "project": image.project.slug,
        "label": image.label.name if image.label_id else None,
        "split": image.split,
        "status": image.status,
        "source": image.source,
        "width": image.width,
        "height": image.height,
        "format": image.format,
        "sha256": image.sha256,
        "revision": image.revision,
        "original_name": image.original_name,
        "created_at": image.created_at,
        "updated_at": image.updated_at,
        "file_url": absolute_reverse(request, "image-file", pk=image.pk),
        "thumbnail_url": absolute_reverse(request, "image-thumbnail", pk=image.pk),
    }


def _category_named(project: Project, name: str, *, allow_unlabeled: bool) -> Category | None:
    """The project's category called ``name``; a 400 naming the valid ones otherwise."""
    category = project.categories.filter(name=name).first()
    if category is None:
        valid = [f"'{n}'" for n in project.categories.values_list("name", flat=True)]
        if allow_unlabeled:
            valid.append(f"'{selectors.UNLABELED}' (unlabeled)")
        raise ValidationError(
            {
                "label": f"No category '{name}' in project '{project.slug}'. "
                f"Valid labels: {', '.join(valid) or 'none yet'}."
            }
        )
    return category


@router.get("/projects/{slug}/images", response={200: ImagePageOut, **ERROR_RESPONSES})
def image_list(request, slug: str, filters: Query[ImageFilters]):
    """One page of images, newest first; follow ``next`` for the rest (no total is counted)."""
    require_perm(request, "reviewapp.view_project", "view projects")
    project = project_or_404(slug)
    label = filters.label
    if label and label != selectors.UNLABELED:
        label = _category_named(project, label, allow_unlabeled=True).pk
    page = selectors.image_list(
        project=project,
        label=label,
        split=filters.split or "",
        status=filters.status,
        before=filters.before,
        limit=filters.limit,
    )
    for image in page.images:
        image.project = project  # one project for the page: no query per image
    next_url = None
    if page.next_cursor is not None:
        query = request.GET.copy()
        query["before"] = str(page.next_cursor)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {"items": [image_out(request, i) for i in page.images], "next": next_url}


@router.post(
    "/projects/{slug}/images",
    response={
        200: UploadOut,
        201: UploadOut,
        202: UploadQueuedOut,
        **ERROR_RESPONSES,
        **QUEUE_RESPONSES,
    },
)
def image_upload(
    request,
    response: HttpResponse,
    slug: str,
    files: File[list[UploadedFile]] = None,
    label: Form[str] = "",
    labels_from_folders: Form[bool] = False,
):
    """Upload images or .zip archives (multipart field ``files``); 201 if any was imported.

    A refused file is a result with a reason, not an error. ``label`` names an existing
    category; ``labels_from_folders`` labels each zip member by its folder, creating
    categories as needed. More files or bytes than LOUPE_INLINE_UPLOAD_MAX_FILES or
    LOUPE_INLINE_UPLOAD_MAX_BYTES (a .zip counts by its size) go to a worker: 202, with
    the upload batch to follow at ``batch_url`` (also the Location header).
    """
    require_perm(request, "reviewapp.add_image", "upload images")
    if labels_from_folders:
        require_perm(request, "reviewapp.add_category", "create categories from zip folders")
    project = project_or_404(slug)
    if not files:
        raise ValidationError(
            {"files": "No files were sent: attach images or .zip archives as multipart 'files'."}
        )
    category = _category_named(project, label, allow_unlabeled=False) if label else None
    uploads = [(f.name, f) for f in files]
    options = {
        "project": project,
        "uploads": uploads,
        "label": category,
        "labels_from_folders": labels_from_folders,
        "actor": request.auth,
    }
    if not services.uploads_fit_inline(uploads, archives_inline=True):
        batch = services.upload_batch_create(**options, fail_if_unqueued=True)
        batch_url = upload_batch_url(request, batch)
        response["Location"] = batch_url
        return Status(202, {"batch": upload_batch_out(request, batch), "batch_url": batch_url})
    results = services.uploads_ingest(**options)
    tally = {status: sum(r.status == status for r in results) for status in _STATUSES}
    body = {
        "results": [r.as_dict() for r in results],
        "imported": tally["imported"],
        "duplicates": tally["duplicate"],
        "rejected": tally["rejected"],
    }
    return Status(201 if tally["imported"] else 200, body)


@router.get("/images/{image_id}", response={200: ImageOut, **ERROR_RESPONSES})
def image_detail(request, image_id: int):
    require_perm(request, "reviewapp.view_project", "view projects")
    image = Image.objects.select_related("project", "label").filter(pk=db_id(image_id)).first()
    if image is None:
        raise Http404(f"No image {image_id}.")
    return image_out(request, image)
