"""Background uploads: big uploads staged to disk and ingested by the upload worker."""

import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .. import enqueue
from ..models import Category, Project, UploadBatch
from .ingest import uploads_count, uploads_ingest

__all__ = ["upload_batch_create", "upload_batch_fail", "upload_batch_run"]


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
