"""Creating predictions: decode, route, answer, store, and queue the shadows' answers."""

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from .. import metrics
from ..imaging import DecodedImage, ImageRejected
from ..models import ClientToken, ModelVersion, Prediction, Project
from ..rollout import version_guard
from ..services import file_too_big, image_decode
from .answers import _answers, _rows
from .model_cache import _models_sync, runtime_for
from .routing import route, serving_versions
from .shadows import _request_ended, _request_started, _shadow_submit, _shadows_answer

__all__ = ["MAX_BATCH_IMAGES", "FileError", "predictions_create", "predictions_create_each"]

logger = logging.getLogger(__name__)

MAX_BATCH_IMAGES = 64
LAST_USED_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class FileError:
    """An image of a batch that was not answered, and why (too big, not an image...)."""

    file: str
    error: str


def _decode_each(images: list[tuple]) -> list[DecodedImage | FileError]:
    """Each of (name, data) or (name, data, real size): a bounded read of a big upload
    holds only the limit plus one byte, and the message should give the file's own size."""
    outcomes = []
    for name, data, *size in images:
        reason = file_too_big(size[0] if size else len(data))
        if not reason:
            try:
                outcomes.append(image_decode(data))
                continue
            except ImageRejected as exc:
                reason = str(exc)
        outcomes.append(FileError(file=name or "image", error=reason))
    return outcomes


def _store_file(project: Project, sha256: str, decoded: DecodedImage) -> str:
    """Keep the received image once per project and content, for reviewers."""
    name = f"predictions/{project.pk}/{sha256[:2]}/{sha256}.{decoded.extension}"
    if not default_storage.exists(name):
        saved = default_storage.save(name, ContentFile(decoded.data))
        if saved != name:  # a racing request stored it meanwhile
            default_storage.delete(saved)
    return name


def _routing_key(*, client_key: str, client: ClientToken | None, user) -> str:
    if client_key:
        return client_key
    if client is not None:
        return f"client:{client.pk}"
    if user is not None and getattr(user, "pk", None):
        return f"user:{user.pk}"
    return uuid.uuid4().hex


def _guard(version: ModelVersion) -> None:
    try:
        version_guard(version=version)
    except Exception:  # a failing guardrail check must not fail the answer already stored
        logger.exception("The guardrails of version %s could not be checked", version.pk)


def predictions_create(
    *,
    project: Project,
    images: list[tuple[str, bytes]],
    client: ClientToken | None = None,
    user=None,
    client_key: str = "",
) -> list[Prediction]:
    """Answer each image with the routed version, ask every shadow version too, store all.

    Returns the answers to send back, in the images' order; shadow answers are stored only.
    A bad image refuses the whole request (ValidationError naming each bad file).
    """
    return _predictions_create(
        project=project,
        images=images,
        client=client,
        user=user,
        client_key=client_key,
        refuse_any_bad=True,
    )


def predictions_create_each(
    *,
    project: Project,
    images: list[tuple[str, bytes]],
    client: ClientToken | None = None,
    user=None,
    client_key: str = "",
) -> list[Prediction | FileError]:
    """Like predictions_create, but a bad image is answered with its FileError, in its place.

    Only when no image at all can be decoded is the request refused (ValidationError).
    """
    return _predictions_create(
        project=project,
        images=images,
        client=client,
        user=user,
        client_key=client_key,
        refuse_any_bad=False,
    )


def _predictions_create(
    *, project, images, client, user, client_key, refuse_any_bad: bool
) -> list[Prediction | FileError]:
    _request_started()
    try:
        started = time.perf_counter()
        if not images:
            raise ValidationError({"image": "No image was sent: attach one as multipart 'image'."})
        if len(images) > MAX_BATCH_IMAGES:
            raise ValidationError(
                {
                    "images": f"At most {MAX_BATCH_IMAGES} images per request; "
                    f"{len(images)} were sent."
                }
            )
        outcomes = _decode_each(images)
        errors = [o for o in outcomes if isinstance(o, FileError)]
        if errors and (refuse_any_bad or len(errors) == len(outcomes)):
            raise ValidationError({"image": [f"{e.file}: {e.error}" for e in errors]})
        decoded = [o for o in outcomes if not isinstance(o, FileError)]
        served = iter(
            _predictions_store(
                project=project,
                decoded=decoded,
                client=client,
                user=user,
                client_key=client_key,
                started=started,
            )
        )
        return [o if isinstance(o, FileError) else next(served) for o in outcomes]
    finally:
        _request_ended()


def _predictions_store(
    *, project, decoded: list[DecodedImage], client, user, client_key, started: float
) -> list[Prediction]:
    """Route, answer and store the decoded images; queue their shadows' answers."""
    versions = serving_versions(project=project)
    _models_sync(project_id=project.pk, active=versions.all)
    key = _routing_key(client_key=client_key, client=client, user=user)
    served_by = route(project_id=project.pk, key=key, versions=versions)
    answers, _ = _answers(served_by, decoded)
    latency_ms = (time.perf_counter() - started) * 1000

    hashes = [hashlib.sha256(d.data).hexdigest() for d in decoded]
    files = [(_store_file(project, h, d), h) for h, d in zip(hashes, decoded, strict=True)]
    request_ids = [uuid.uuid4() for _ in decoded]
    common = {
        "client": client,
        "client_key": key[:200] if client_key else "",
        "user": user if user is not None and getattr(user, "pk", None) else None,
        "created_at": timezone.now(),
    }
    served = _rows(
        project=project,
        version=served_by,
        answers=answers,
        request_ids=request_ids,
        files=files,
        latency_ms=latency_ms,
        is_shadow=False,
        common=common,
    )
    with transaction.atomic():
        Prediction.objects.bulk_create(served)
    metrics.observe_served(
        project=project.slug,
        version=served_by.number,
        stage=served_by.stage,
        runtime=runtime_for(served_by),
        latency_s=latency_ms / 1000,
        count=len(served),
        low_confidence=sum(p.confidence < project.review_confidence for p in served),
        out_of_domain=sum(p.is_ood for p in served),
    )
    # Not sent, stored: every shadow's answer and, for a request the limited version served,
    # the live version's, so both can be compared with what the client got.
    second_opinions = list(versions.shadows)
    if served_by.stage == ModelVersion.Stage.LIMITED and versions.live is not None:
        second_opinions.append(versions.live)
    if second_opinions:
        shadow_job = {
            "project": project,
            "shadows": second_opinions,
            "decoded": decoded,
            "request_ids": request_ids,
            "files": files,
            "common": common,
            "served_labels": [p.label for p in served],
        }
        if settings.LOUPE_SHADOW_ASYNC:
            transaction.on_commit(lambda: _shadow_submit(shadow_job))
        else:
            _shadows_answer(**shadow_job)
    if client is not None and (
        client.last_used_at is None or common["created_at"] - client.last_used_at > LAST_USED_EVERY
    ):
        # At most once a minute, so a busy client does not cost a write per request.
        ClientToken.objects.filter(pk=client.pk).update(last_used_at=common["created_at"])
    if served_by.stage == ModelVersion.Stage.LIMITED:
        _guard(served_by)
    return served
