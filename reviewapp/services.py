"""Writes: every change to Loupe's data goes through a function here."""

import hashlib
import logging
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone
from django.utils.text import slugify

from . import claims, enqueue, hotkeys
from .archives import ArchiveRejected, is_zip, iter_zip_members, zip_entry_count
from .imaging import DecodedImage, ImageRejected, decode_image, too_big_reason
from .models import ApiToken, Category, Image, LabelEvent, ModelVersion, Project, UploadBatch

__all__ = [
    "DecisionResult",
    "IngestResult",
    "StaleRevision",
    "api_token_create",
    "category_create",
    "category_delete",
    "category_get_or_create",
    "category_merge",
    "category_update",
    "file_too_big",
    "image_decode",
    "image_decide",
    "image_decision_undo",
    "image_ingest",
    "images_decide",
    "project_create",
    "project_update",
    "upload_batch_create",
    "upload_batch_fail",
    "upload_batch_run",
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


# Projects -------------------------------------------------------------------------


def _unique_slug(name: str) -> str:
    base = slugify(name)[:70] or "project"
    slug, n = base, 2
    while Project.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


@transaction.atomic
def project_create(*, name: str, actor=None, slug: str = "", **fields) -> Project:
    """Create a project; the slug is derived from the name unless given."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "A project needs a name."})
    if slug and Project.objects.filter(slug=slug).exists():
        raise ValidationError({"slug": f"The slug '{slug}' is already taken."})
    project = Project(name=name, slug=slug or _unique_slug(name), created_by=actor, **fields)
    project.full_clean()
    project.save()
    return project


SPLIT_FIELDS = ("split_seed", "valid_pct")


@transaction.atomic
def project_update(*, project: Project, **fields) -> Project:
    """Change a project's settings; a new seed or share re-splits every image."""
    resplit = any(
        name in fields and fields[name] != getattr(project, name) for name in SPLIT_FIELDS
    )
    for name, value in fields.items():
        setattr(project, name, value)
    project.full_clean()
    project.save()
    if resplit:
        _project_resplit(project)
    return project


def _project_resplit(project: Project) -> None:
    changed = []
    for image in project.images.only("id", "sha256", "split").iterator(chunk_size=2000):
        split = project.split_for(image.sha256)
        if split != image.split:
            image.split = split
            changed.append(image)
    Image.objects.bulk_update(changed, ["split"], batch_size=1000)


# Categories -----------------------------------------------------------------------


def _free_hotkey(project: Project, name: str) -> str:
    used = set(project.categories.exclude(hotkey="").values_list("hotkey", flat=True))
    return hotkeys.hotkey_for_new(name, used)


def _check_hotkey(hotkey: str) -> None:
    if problem := hotkeys.hotkey_problem(hotkey):
        raise ValidationError({"hotkey": problem})


def _clean_category_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "A category needs a name."})
    if len(name) > 100:
        raise ValidationError({"name": "A category name has at most 100 characters."})
    if "/" in name:
        raise ValidationError({"name": "A category name cannot contain '/'."})
    return name


@transaction.atomic
def category_create(*, project: Project, name: str, hotkey: str | None = None) -> Category:
    """Add a category at the end; it gets the next free hotkey unless one is given."""
    name = _clean_category_name(name)
    if project.categories.filter(name=name).exists():
        raise ValidationError({"name": f"'{name}' already exists in this project."})
    hotkey = _free_hotkey(project, name) if hotkey is None else hotkey.strip()
    _check_hotkey(hotkey)
    if hotkey and project.categories.filter(hotkey=hotkey).exists():
        raise ValidationError({"hotkey": f"Hotkey {hotkey} is already used."})
    position = (project.categories.aggregate(m=Max("position"))["m"] or 0) + 1
    category = Category(project=project, name=name, hotkey=hotkey, position=position)
    category.full_clean()
    category.save()
    return category


def category_get_or_create(*, project: Project, name: str) -> Category:
    name = _clean_category_name(name)
    try:
        return project.categories.get(name=name)
    except Category.DoesNotExist:
        pass
    try:
        return category_create(project=project, name=name)
    except (ValidationError, IntegrityError):
        # Another process created it meanwhile.
        return project.categories.get(name=name)


@transaction.atomic
def category_update(
    *,
    category: Category,
    name: str | None = None,
    hotkey: str | None = None,
    position: int | None = None,
) -> Category:
    """Rename a category, change its hotkey ('' for none) or its position."""
    siblings = Category.objects.filter(project_id=category.project_id).exclude(pk=category.pk)
    if name is not None:
        name = _clean_category_name(name)
        if siblings.filter(name=name).exists():
            raise ValidationError(
                {"name": f"'{name}' already exists; merge the two categories instead."}
            )
        category.name = name
    if hotkey is not None:
        hotkey = hotkey.strip()
        _check_hotkey(hotkey)
        if hotkey and siblings.filter(hotkey=hotkey).exists():
            taken = siblings.get(hotkey=hotkey)
            raise ValidationError({"hotkey": f"Hotkey {hotkey} is already used by '{taken}'."})
        category.hotkey = hotkey
    if position is not None:
        category.position = position
    category.full_clean()
    category.save()
    return category


@transaction.atomic
def category_merge(*, source: Category, target: Category, actor=None) -> int:
    """Move every image of ``source`` to ``target``, log each move, delete ``source``."""
    if source.project_id != target.project_id:
        raise ValidationError("Both categories must belong to the same project.")
    if source.pk == target.pk:
        raise ValidationError("A category cannot be merged into itself.")
    images = list(Image.objects.select_for_update().filter(label=source).only("id"))
    note = f"merged category '{source.name}' into '{target.name}'"
    LabelEvent.objects.bulk_create(
        [
            LabelEvent(
                project_id=source.project_id,
                image_id=image.pk,
                actor=actor,
                action=LabelEvent.Action.RELABEL,
                from_category=source,
                to_category=target,
                note=note,
            )
            for image in images
        ],
        batch_size=1000,
    )
    Image.objects.filter(label=source).update(
        label=target, revision=F("revision") + 1, updated_at=timezone.now()
    )
    if source.hotkey and not target.hotkey:
        target.hotkey, source.hotkey = source.hotkey, ""
        source.save(update_fields=["hotkey"])
        target.save(update_fields=["hotkey"])
    source.delete()
    return len(images)


@transaction.atomic
def category_delete(*, category: Category) -> None:
    """Delete an empty category; one with images must be merged instead."""
    count = category.images.count()
    if count:
        raise ValidationError(
            f"'{category.name}' still labels {count} image(s); merge it into another "
            "category instead."
        )
    category.delete()


# Ingest ---------------------------------------------------------------------------


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


# Background uploads ---------------------------------------------------------------


def _staging_root() -> Path:
    return Path(settings.MEDIA_ROOT) / "staging"


@transaction.atomic
def upload_batch_create(
    *,
    project: Project,
    uploads: Iterable[tuple[str, BinaryIO]],
    label: Category | None = None,
    labels_from_folders: bool = False,
    actor=None,
    fail_if_unqueued: bool = False,
) -> UploadBatch:
    """Stage the uploaded files on shared media storage and queue their ingest.

    ``fail_if_unqueued``: someone is waiting, so a broker that refuses the job fails the
    batch and raises ``enqueue.QueueUnavailable``; otherwise the reaper sends it again.
    """
    uploads = list(uploads)
    staging = _staging_root() / uuid.uuid4().hex
    staging.mkdir(parents=True)
    try:
        manifest = []
        for index, (name, fileobj) in enumerate(uploads):
            path = staging / f"{index:06d}"
            with path.open("wb") as out:
                shutil.copyfileobj(fileobj, out)
            manifest.append(name)
        (staging / "names.txt").write_text("\n".join(n.replace("\n", " ") for n in manifest))
        with_counts = [(name, (staging / f"{i:06d}").open("rb")) for i, name in enumerate(manifest)]
        try:
            total = uploads_count(with_counts)
        finally:
            for _, f in with_counts:
                f.close()
        batch = UploadBatch.objects.create(
            project=project,
            created_by=actor,
            label=label,
            labels_from_folders=labels_from_folders,
            staging_dir=str(staging.relative_to(settings.MEDIA_ROOT)),
            progress_total=total,
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if fail_if_unqueued:
        enqueue.send_or_fail(
            enqueue.UPLOAD_BATCH,
            batch.pk,
            on_failure=lambda message: upload_batch_fail(batch=batch, message=message),
        )
    else:
        enqueue.send(enqueue.UPLOAD_BATCH, batch.pk)
    return batch


def upload_batch_fail(*, batch: UploadBatch, message: str) -> bool:
    """Fail a pending or running batch with ``message`` and remove its staged files."""
    failed = UploadBatch.objects.filter(
        pk=batch.pk, status__in=(UploadBatch.Status.PENDING, UploadBatch.Status.RUNNING)
    ).update(status=UploadBatch.Status.FAILED, error_message=message, finished_at=timezone.now())
    if failed:
        shutil.rmtree(Path(settings.MEDIA_ROOT) / batch.staging_dir, ignore_errors=True)
    return bool(failed)


def upload_batch_run(*, batch_id: int) -> None:
    """Ingest a staged batch; a redelivered message finds it no longer pending."""
    with transaction.atomic():
        claimed = UploadBatch.objects.filter(pk=batch_id, status=UploadBatch.Status.PENDING).update(
            status=UploadBatch.Status.RUNNING, started_at=timezone.now()
        )
    if not claimed:
        return
    batch = UploadBatch.objects.select_related("project", "label", "created_by").get(pk=batch_id)
    staging = Path(settings.MEDIA_ROOT) / batch.staging_dir

    def on_progress(done: int, total: int) -> None:
        if done == total or done % 10 == 0:
            UploadBatch.objects.filter(pk=batch_id).update(progress_done=done, progress_total=total)

    try:
        names = (staging / "names.txt").read_text().split("\n")
        files = [(name, (staging / f"{i:06d}").open("rb")) for i, name in enumerate(names)]
        try:
            results = uploads_ingest(
                project=batch.project,
                uploads=files,
                label=batch.label,
                labels_from_folders=batch.labels_from_folders,
                actor=batch.created_by,
                on_progress=on_progress,
                total=batch.progress_total,
            )
        finally:
            for _, f in files:
                f.close()
    except Exception as exc:
        UploadBatch.objects.filter(pk=batch_id).update(
            status=UploadBatch.Status.FAILED,
            error_message=f"The upload could not be processed: {exc}",
            finished_at=timezone.now(),
        )
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    UploadBatch.objects.filter(pk=batch_id).update(
        status=UploadBatch.Status.SUCCEEDED,
        results=[r.as_dict() for r in results],
        progress_done=len(results),
        progress_total=len(results),
        finished_at=timezone.now(),
    )


# Review decisions -----------------------------------------------------------------


class StaleRevision(Exception):
    """The image changed since the caller saw it; nothing was applied."""

    def __init__(self, image: Image, last: LabelEvent | None):
        self.image, self.last = image, last
        who = ""
        if last is not None and last.action != LabelEvent.Action.IMPORT:
            who = f" by {last.actor.get_username() if last.actor else 'the system'}"
            who += f" ({last.get_action_display().lower()})"
        state = f"labeled '{image.label.name}'" if image.label else "unlabeled"
        if image.status == Image.Status.DELETED:
            state += ", in the trash"
        super().__init__(
            f"Image #{image.pk} was changed{who} since you loaded it: it is now {state} "
            f"(revision {image.revision}). Your action was not applied; look again and decide."
        )


@dataclass
class DecisionResult:
    image_id: int
    ok: bool
    message: str = ""
    event_id: int | None = None


Action = LabelEvent.Action
DECISION_ACTIONS = ("confirm", "relabel", "delete", "restore")


def _locked_image(image_id: int) -> Image:
    try:
        # of=self: PostgreSQL cannot lock the nullable side of the label's outer join.
        return (
            Image.objects.select_for_update(of=("self",)).select_related("label").get(pk=image_id)
        )
    except Image.DoesNotExist:
        raise ValidationError(f"There is no image #{image_id}.") from None


def _last_event(image: Image) -> LabelEvent | None:
    return image.events.select_related("actor").order_by("-id").first()


@transaction.atomic
def image_decide(
    *,
    image_id: int,
    action: str,
    actor,
    revision: int,
    label: Category | None = None,
    version: ModelVersion | None = None,
    note: str = "",
) -> LabelEvent:
    """Confirm, relabel, delete or restore one image; refused if ``revision`` is stale."""
    image = _locked_image(image_id)
    if image.revision != revision:
        raise StaleRevision(image, _last_event(image))
    before = image.label
    if action == "relabel":
        if label is None:
            raise ValidationError({"label": "Relabel needs the new label."})
        if label.project_id != image.project_id:
            raise ValidationError({"label": f"'{label.name}' is not a class of this project."})
        if image.status == Image.Status.DELETED:
            raise ValidationError("This image is in the trash; restore it before relabeling.")
        if label.pk == image.label_id:
            action = "confirm"  # the label it already has: the reviewer agrees with it
        else:
            image.label = label
            kind = Action.RELABEL if before is not None else Action.LABEL
    if action == "confirm":
        if image.status == Image.Status.DELETED:
            raise ValidationError("This image is in the trash; restore it before confirming.")
        if image.label is None:
            raise ValidationError("An unlabeled image cannot be confirmed; give it a label.")
        kind = Action.CONFIRM
    elif action == "delete":
        if image.status == Image.Status.DELETED:
            raise ValidationError("This image is already in the trash.")
        image.status, kind = Image.Status.DELETED, Action.DELETE
    elif action == "restore":
        if image.status == Image.Status.ACTIVE:
            raise ValidationError("This image is not in the trash.")
        image.status, kind = Image.Status.ACTIVE, Action.RESTORE
    elif action != "relabel":
        raise ValidationError(
            {"action": f"Unknown action '{action}'; use one of {', '.join(DECISION_ACTIONS)}."}
        )
    now = timezone.now()
    image.revision += 1
    image.reviewed_at = now
    image.save(update_fields=["label", "status", "revision", "reviewed_at", "updated_at"])
    held_by = claims.claim_holder(image_id=image.pk, actor=actor)
    if image.label_id is not None or image.status == Image.Status.DELETED:
        claims.claims_leave_label_queue(image_id=image.pk)  # labeled: it leaves the queue
    return LabelEvent.objects.create(
        project_id=image.project_id,
        image=image,
        actor=actor,
        action=kind,
        from_category=before,
        to_category=image.label,
        note=note[:1000],
        version=version,
        claimed_by=held_by,
    )


def images_decide(
    *,
    images: Iterable[tuple[int, int]],
    action: str,
    actor,
    label: Category | None = None,
    version: ModelVersion | None = None,
) -> list[DecisionResult]:
    """One decision for many (image id, revision) pairs; each stands or fails alone."""
    results = []
    for image_id, revision in images:
        try:
            event = image_decide(
                image_id=image_id,
                action=action,
                actor=actor,
                revision=revision,
                label=label,
                version=version,
            )
        except (StaleRevision, ValidationError) as exc:
            message = str(exc) if isinstance(exc, StaleRevision) else " ".join(exc.messages)
            results.append(DecisionResult(image_id, False, message))
        else:
            results.append(DecisionResult(image_id, True, event_id=event.pk))
    return results


@transaction.atomic
def image_decision_undo(*, image_id: int, actor, revision: int) -> LabelEvent:
    """Revert the latest decision on an image that still stands; the undo is audited too."""
    image = _locked_image(image_id)
    if image.revision != revision:
        raise StaleRevision(image, _last_event(image))
    last = (
        image.events.filter(action__in=LabelEvent.DECISIONS, undone_by__isnull=True)
        .select_related("from_category", "to_category")
        .order_by("-id")
        .first()
    )
    if last is None:
        raise ValidationError("There is no decision on this image to undo.")
    current = image.label
    if last.action in (Action.LABEL, Action.RELABEL):
        if last.from_category_id is None and last.action == Action.RELABEL:
            raise ValidationError(
                "The label this image had before was deleted (merged away); relabel it instead."
            )
        image.label = last.from_category
    elif last.action == Action.DELETE:
        image.status = Image.Status.ACTIVE
    elif last.action == Action.RESTORE:
        image.status = Image.Status.DELETED
    event = LabelEvent.objects.create(
        project_id=image.project_id,
        image=image,
        actor=actor,
        action=Action.UNDO,
        from_category=current,
        to_category=image.label,
        note=f"undid {last.get_action_display().lower()} #{last.pk}",
        version_id=last.version_id,
        undo_of=last,
    )
    image.revision += 1
    image.reviewed_at = (
        image.events.filter(action__in=LabelEvent.DECISIONS, undone_by__isnull=True)
        .order_by("-id")
        .values_list("created_at", flat=True)
        .first()
    )
    image.save(update_fields=["label", "status", "revision", "reviewed_at", "updated_at"])
    return event


# API tokens -----------------------------------------------------------------------


def api_token_create(*, user, name: str) -> tuple[ApiToken, str]:
    """Create a personal token; returns it with the plain key, which is never stored."""
    name = (name or "").strip() or "API token"
    key = ApiToken.generate_key()
    token = ApiToken.objects.create(
        user=user, name=name[:100], key_hash=ApiToken.hash_key(key), prefix=key[:8]
    )
    return token, key
