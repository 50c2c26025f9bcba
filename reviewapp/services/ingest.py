"""Ingest: files and zips become images, each refused or accepted alone, duplicates found
by content hash."""

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import BinaryIO

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from .. import enqueue
from ..archives import ArchiveRejected, is_zip, iter_zip_members, zip_entry_count
from ..imaging import DecodedImage, ImageRejected, decode_image, too_big_reason
from ..models import Category, Image, LabelEvent, ModelVersion, Project
from .categories import category_get_or_create

__all__ = [
    "IngestResult",
    "ProgressFn",
    "file_too_big",
    "image_decode",
    "image_ingest",
    "suggestions_later",
    "uploads_count",
    "uploads_fit_inline",
    "uploads_ingest",
]

logger = logging.getLogger(__name__)


ProgressFn = Callable[[int, int], None]


@dataclass
class IngestResult:
    name: str
    status: str  # imported | duplicate | rejected
    reason: str = ""
    image_id: int | None = None
    label: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def file_too_big(size: int) -> str:
    """The reason a file of ``size`` bytes is refused, or "" if it is within the limit."""
    return too_big_reason(size, settings.LOUPE_MAX_FILE_BYTES)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_decode(data: bytes) -> DecodedImage:
    """Decode with the configured limits; raises ImageRejected. Safe to run in threads."""
    return decode_image(
        data,
        max_pixels=settings.LOUPE_MAX_IMAGE_PIXELS,
        thumbnail_size=settings.LOUPE_THUMBNAIL_SIZE,
    )


def image_ingest(
    *,
    project: Project,
    data: bytes,
    name: str,
    label: Category | None = None,
    source: str = Image.Source.UPLOAD,
    actor=None,
    sha256: str | None = None,
    decoded: DecodedImage | ImageRejected | None = None,
    size: int | None = None,
) -> IngestResult:
    """Check, store and record one file; a refused file leaves no row and no file.

    ``sha256`` and ``decoded`` may come precomputed (a folder import does them in threads);
    ``size`` is the file's real size when ``data`` was read only up to the limit.
    """
    label_name = label.name if label else ""
    if reason := file_too_big(max(size or 0, len(data))):
        return IngestResult(name, "rejected", reason, label=label_name)
    sha256 = sha256 or _sha256(data)
    existing = _existing(project, sha256)
    if existing:
        return _duplicate(name, existing, label_name)
    try:
        if isinstance(decoded, ImageRejected):
            raise decoded
        decoded = decoded or image_decode(data)
    except ImageRejected as exc:
        return IngestResult(name, "rejected", str(exc), label=label_name)

    image = Image(
        project=project,
        sha256=sha256,
        original_name=name[-255:],
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        label=label,
        split=project.split_for(sha256),
        source=source,
    )
    stem = f"{sha256}-{uuid.uuid4().hex[:8]}"  # unique: a racing duplicate cannot clobber it
    saved = []
    try:
        image.file.save(f"{stem}.{decoded.extension}", ContentFile(decoded.data), save=False)
        saved.append(image.file.name)
        image.thumbnail.save(f"{stem}.jpg", ContentFile(decoded.thumbnail), save=False)
        saved.append(image.thumbnail.name)
        with transaction.atomic():
            image.save()
            LabelEvent.objects.create(
                project=project,
                image=image,
                actor=actor,
                action=LabelEvent.Action.IMPORT,
                to_category=label,
                note=f"{source}: {name}"[:1000],
            )
    except IntegrityError:
        _delete_files(saved)
        existing = _existing(project, sha256)
        if existing:
            return _duplicate(name, existing, label_name)
        raise
    except BaseException:
        _delete_files(saved)
        raise
    return IngestResult(name, "imported", image_id=image.pk, label=label_name)


def _existing(project: Project, sha256: str) -> tuple[int, str, str | None] | None:
    return project.images.filter(sha256=sha256).values_list("id", "status", "label__name").first()


def _duplicate(name: str, existing: tuple[int, str, str | None], label_name: str) -> IngestResult:
    """The stored image's label, not the one asked for: the upload changed nothing."""
    image_id, status, stored = existing
    deleted = " (in the trash)" if status == Image.Status.DELETED else ""
    reason = f"same file as image #{image_id}{deleted}"
    if label_name and label_name != stored:
        reason += f"; kept its label {stored or 'unlabeled'}, not {label_name}"
    return IngestResult(name, "duplicate", reason, image_id=image_id, label=stored or "")


def _delete_files(names: Iterable[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.exception("Could not remove %s after a failed ingest", name)


def _read_bounded(fileobj: BinaryIO) -> bytes:
    # One byte past the limit is enough to know it is too big.
    return fileobj.read(settings.LOUPE_MAX_FILE_BYTES + 1)


def _size_of(fileobj: BinaryIO) -> int:
    position = fileobj.tell()
    fileobj.seek(0, 2)
    size = fileobj.tell()
    fileobj.seek(position)
    return size


def _zip_members(fileobj: BinaryIO):
    return iter_zip_members(
        fileobj,
        max_entries=settings.LOUPE_MAX_ZIP_ENTRIES,
        max_total_bytes=settings.LOUPE_MAX_ZIP_UNCOMPRESSED_BYTES,
        max_member_bytes=settings.LOUPE_MAX_FILE_BYTES,
        max_ratio=settings.LOUPE_MAX_ZIP_RATIO,
        max_archive_bytes=settings.LOUPE_MAX_ZIP_BYTES,
    )


def _looks_like_archive(name: str, fileobj: BinaryIO) -> bool:
    return name.lower().endswith(".zip") or is_zip(fileobj)


def _archive_refused_at_once(name: str, fileobj: BinaryIO) -> bool:
    """Too many entries, read from its end record: refusing it takes no time at all."""
    if not _looks_like_archive(name, fileobj):
        return False
    return (zip_entry_count(fileobj) or 0) > settings.LOUPE_MAX_ZIP_ENTRIES


def uploads_fit_inline(uploads: list[tuple[str, BinaryIO]], *, archives_inline: bool) -> bool:
    """Few and small enough to ingest within the request (LOUPE_INLINE_UPLOAD_MAX_*).

    An archive counts by its size; ``archives_inline=False`` sends any archive to a worker.
    An archive with too many entries costs nothing: it is refused as soon as it is seen.
    """
    kept = [(name, f) for name, f in uploads if not _archive_refused_at_once(name, f)]
    if not archives_inline and any(_looks_like_archive(name, f) for name, f in kept):
        return False
    return (
        len(kept) <= settings.LOUPE_INLINE_UPLOAD_MAX_FILES
        and sum(_size_of(f) for _, f in kept) <= settings.LOUPE_INLINE_UPLOAD_MAX_BYTES
    )


def uploads_count(uploads: Iterable[tuple[str, BinaryIO]]) -> int:
    """How many files the uploads hold, counting each archive's members."""
    import zipfile

    total = 0
    for name, fileobj in uploads:
        if _archive_refused_at_once(name, fileobj):
            total += 1  # one result: the archive's refusal
            continue
        if _looks_like_archive(name, fileobj):
            try:
                position = fileobj.tell()
                with zipfile.ZipFile(fileobj) as archive:
                    total += sum(1 for info in archive.infolist() if not info.is_dir())
                fileobj.seek(position)
                continue
            except (zipfile.BadZipFile, OSError):
                fileobj.seek(0)
        total += 1
    return total


def uploads_ingest(
    *,
    project: Project,
    uploads: Iterable[tuple[str, BinaryIO]],
    label: Category | None = None,
    labels_from_folders: bool = False,
    source: str = Image.Source.UPLOAD,
    actor=None,
    on_progress: ProgressFn | None = None,
    total: int = 0,
) -> list[IngestResult]:
    """Ingest uploaded files and .zip archives; one result per file, in order."""
    results: list[IngestResult] = []

    def record(result: IngestResult) -> None:
        results.append(result)
        if on_progress:
            on_progress(len(results), max(total, len(results)))

    for name, fileobj in uploads:
        if _looks_like_archive(name, fileobj):
            try:
                for member in _zip_members(fileobj):
                    member_name = f"{name}/{member.name}"
                    if member.data is None:
                        record(IngestResult(member_name, "rejected", member.reason))
                        continue
                    member_label = label
                    if labels_from_folders and member.folder:
                        member_label = category_get_or_create(project=project, name=member.folder)
                    record(
                        image_ingest(
                            project=project,
                            data=member.data,
                            name=member_name,
                            label=member_label,
                            source=source,
                            actor=actor,
                        )
                    )
            except ArchiveRejected as exc:
                record(IngestResult(name, "rejected", str(exc)))
            continue
        record(
            image_ingest(
                project=project,
                data=_read_bounded(fileobj),
                name=name,
                label=label,
                source=source,
                actor=actor,
                size=_size_of(fileobj),
            )
        )
    if any(r.status == "imported" and not r.label for r in results):
        suggestions_later(project=project)
    return results


def suggestions_later(*, project: Project) -> None:
    """New unlabeled images get the latest version's suggestions from a background job."""
    if ModelVersion.objects.filter(project=project).exists():
        enqueue.send(enqueue.SUGGESTIONS_REFRESH, project.pk)
