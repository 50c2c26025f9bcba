"""Image files and thumbnails, served through Django: images are private, never under /media/."""

from django.http import FileResponse, Http404, HttpResponseNotModified
from django.shortcuts import get_object_or_404
from django.utils.cache import patch_cache_control
from django.utils.http import parse_etags
from django.views.decorators.http import require_GET

from ..models import Image
from .common import login_required, require_perm

__all__ = ["BROWSER_FORMATS", "CONTENT_TYPES", "image_file", "image_thumbnail"]

# Pillow's format name -> MIME type; MPO is a phone camera's multi-picture JPEG.
CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
# Formats every current browser draws in an <img>; the others show their thumbnail.
BROWSER_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP"}
# A stored file never changes (a new file is a new image), so browsers may keep it a day.
MAX_AGE = 24 * 3600


def _serve(request, fieldfile, *, content_type: str, etag: str):
    """The file with a private cache policy; a 304 when the browser holds this version."""
    if_none_match = parse_etags(request.headers.get("If-None-Match", ""))
    if etag in if_none_match or "*" in if_none_match:
        response = HttpResponseNotModified()
    else:
        try:
            handle = fieldfile.open("rb")
        except (FileNotFoundError, ValueError) as exc:
            raise Http404("The stored file is missing.") from exc
        response = FileResponse(handle, content_type=content_type)
    response["ETag"] = etag
    patch_cache_control(response, private=True, max_age=MAX_AGE)
    return response


@require_GET
@login_required
def image_file(request, pk):
    require_perm(request.user, "reviewapp.view_project")
    image = get_object_or_404(Image.objects.only("id", "file", "format", "sha256"), pk=pk)
    return _serve(
        request,
        image.file,
        content_type=CONTENT_TYPES.get(image.format, "application/octet-stream"),
        etag=f'"{image.sha256}"',
    )


@require_GET
@login_required
def image_thumbnail(request, pk):
    require_perm(request.user, "reviewapp.view_project")
    image = get_object_or_404(Image.objects.only("id", "thumbnail", "sha256"), pk=pk)
    return _serve(
        request, image.thumbnail, content_type="image/jpeg", etag=f'"{image.sha256}-thumb"'
    )
