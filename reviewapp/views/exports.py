"""Export the cleaned dataset: a zip with one folder per class, or its CSV alone.

Only active, labeled images are exported: deleted ones are in the trash, and unlabeled ones
have nothing to learn from. Each image's ``path`` is where the zip stores it,
``<class folder>/<image id>-<original name or sha256>.<ext>``, so the CSV and the zip agree.
"""

import csv
import logging
import re
import shutil
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

from django.http import FileResponse, StreamingHttpResponse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from .. import selectors
from ..models import Category, Image, Project
from .common import login_required, project_for

__all__ = ["CSV_HEADER", "dataset_csv", "dataset_rows", "dataset_zip"]

logger = logging.getLogger(__name__)

CSV_HEADER = ("path", "label", "split", "image_id", "sha256", "width", "height")
CHUNK_SIZE = 2000
# Already compressed: deflating them again costs CPU and saves nothing.
STORED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "GIF"}
# Characters no file system or unzip tool takes in a name, and control characters.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
_MAX_PART = 100


@dataclass(frozen=True)
class DatasetRow:
    path: str  # inside the zip
    label: str  # the class's name as the project spells it
    split: str
    image_id: int
    sha256: str
    width: int
    height: int
    file: str  # storage name of the stored file
    format: str
    created_at: datetime | None

    def as_csv(self) -> tuple:
        return tuple(getattr(self, column) for column in CSV_HEADER)


def _safe_part(text: str, fallback: str) -> str:
    """One path segment: no separators, no '..', no leading dots, never empty."""
    text = _UNSAFE.sub("_", unicodedata.normalize("NFC", text or ""))
    text = text.strip(" .")[:_MAX_PART].strip(" .")
    return text or fallback


def class_folders(categories: Iterable[Category]) -> dict[int, str]:
    """A distinct, safe folder name per category; two names that clash get the id appended."""
    folders, taken = {}, set()
    for category in categories:
        folder = _safe_part(category.name, f"class-{category.pk}")
        # Case-insensitive: 'Cat' and 'cat' would share one folder on macOS and Windows.
        if folder.casefold() in taken:
            folder = f"{folder}-{category.pk}"
        taken.add(folder.casefold())
        folders[category.pk] = folder
    return folders


def _file_name(image: Image) -> str:
    """``<id>-<original stem or sha256>.<ext>``; the extension is the stored file's."""
    original = (image.original_name or "").replace("\\", "/").rsplit("/", 1)[-1]
    stem = _safe_part(PurePosixPath(original).stem, image.sha256)
    ext = PurePosixPath(image.file.name).suffix.lower() or f".{image.format.lower()}"
    return f"{image.pk}-{stem}{ext}"


def dataset_rows(project: Project) -> Iterator[DatasetRow]:
    """The export, one row per active labeled image, read from the database in chunks."""
    categories = {c.pk: c for c in project.categories.all()}
    folders = class_folders(categories.values())
    images = selectors.dataset_image_list(project=project).iterator(chunk_size=CHUNK_SIZE)
    for image in images:
        if image.label_id not in categories:  # a class made after the first query
            categories = {c.pk: c for c in project.categories.all()}
            folders = class_folders(categories.values())
        yield DatasetRow(
            path=f"{folders[image.label_id]}/{_file_name(image)}",
            label=categories[image.label_id].name,
            split=image.split,
            image_id=image.pk,
            sha256=image.sha256,
            width=image.width,
            height=image.height,
            file=image.file.name,
            format=image.format,
            created_at=image.created_at,
        )


class _Echo:
    """A write-only file whose write returns the text, so csv.writer feeds a generator."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(rows: Iterable[DatasetRow]) -> Iterator[str]:
    writer = csv.writer(_Echo(), lineterminator="\n")
    yield writer.writerow(CSV_HEADER)
    for row in rows:
        yield writer.writerow(row.as_csv())


@require_GET
@login_required
def dataset_csv(request, slug):
    """The labels as CSV, streamed: memory stays flat however large the project."""
    project = project_for(request, slug, "reviewapp.view_image")
    response = StreamingHttpResponse(
        _csv_lines(dataset_rows(project)), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = content_disposition_header(True, f"{project.slug}-labels.csv")
    return response


def _zip_info(name: str, row: DatasetRow | None = None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_zip_time(row.created_at if row else None))
    stored = row is not None and row.format in STORED_FORMATS
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16  # rw-r--r-- when unzipped
    return info


def _zip_time(moment) -> tuple:
    # Zip timestamps are local, naive and start in 1980.
    stamp = timezone.localtime(moment) if moment else timezone.localtime()
    return max(stamp.timetuple()[:6], (1980, 1, 1, 0, 0, 0))


def write_dataset_zip(project: Project, target) -> int:
    """Write the export into the binary file ``target``; returns how many images it holds.

    Files are copied in blocks, so memory stays flat. An image whose file is missing from
    storage is left out of the zip and of its labels.csv, and listed in missing.txt.
    """
    storage = Image._meta.get_field("file").storage
    line = csv.writer(_Echo(), lineterminator="\n").writerow
    written, missing = 0, []
    # The CSV is spooled aside and added last: zipfile writes one member at a time.
    with (
        tempfile.SpooledTemporaryFile(max_size=8 * 2**20) as labels,
        zipfile.ZipFile(target, "w", allowZip64=True) as archive,
    ):
        labels.write(line(CSV_HEADER).encode())
        for row in dataset_rows(project):
            try:
                source = storage.open(row.file, "rb")
            except (FileNotFoundError, ValueError):
                missing.append(row)
                continue
            with source, archive.open(_zip_info(row.path, row), "w") as member:
                shutil.copyfileobj(source, member, 2**20)
            labels.write(line(row.as_csv()).encode())
            written += 1
        labels.seek(0)
        with archive.open(_zip_info("labels.csv"), "w") as member:
            shutil.copyfileobj(labels, member, 2**20)
        if missing:
            logger.warning("Export of %s: %d stored file(s) missing", project.slug, len(missing))
            lines = [f"{r.image_id}\t{r.path}\t{r.file}" for r in missing]
            text = "Images left out because their stored file is missing:\n" + "\n".join(lines)
            archive.writestr(_zip_info("missing.txt"), text)
    return written


@require_GET
@login_required
def dataset_zip(request, slug):
    """The dataset as a zip built in a temporary file, which is gone once it has been sent."""
    project = project_for(request, slug, "reviewapp.view_image")
    # An unnamed temporary file, owned by the response: the OS removes it once it is closed.
    target = tempfile.TemporaryFile()  # noqa: SIM115
    try:
        write_dataset_zip(project, target)
        target.seek(0)
    except BaseException:
        target.close()
        raise
    return FileResponse(
        target,
        as_attachment=True,
        filename=f"{project.slug}-dataset.zip",
        content_type="application/zip",
    )
