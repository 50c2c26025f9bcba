"""Serving: the per-process model cache, routing, shadow copies, stored predictions, their
review, client tokens and the monitoring numbers.

Routing: a request with routing key ``k`` goes to the LIMITED version when there is one, it
is not paused, and ``route_bucket(project, k) < traffic_share``; otherwise to the LIVE one.
With no LIVE version nothing is served (NoLiveModel, HTTP 503), even if a limited version
exists: a limited version is a partial rollout and never takes all the traffic by default.
Every SHADOW version answers every request too; its answers are stored, never returned.
A request the limited version served is also answered, and stored, by the live version.
They are queued for a background thread after the served answer is stored, and answered
in batches when the process is idle (LOUPE_SHADOW_ASYNC, default on; off: in the request),
so shadows add no inference time to the client's latency.
"""

import hashlib
import logging
import math
import queue
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import close_old_connections, connection, transaction
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from .imaging import DecodedImage, ImageRejected
from .models import Category, ClientToken, Image, ImageScore, ModelVersion, Prediction, Project
from .services import file_too_big, image_decode, image_ingest

__all__ = [
    "OOD_METHOD",
    "Monitoring",
    "ModelUnavailable",
    "NoLiveModel",
    "ServingVersions",
    "client_token_create",
    "client_token_revoke",
    "disagreements_to_review",
    "model_cache_clear",
    "model_cache_version_ids",
    "model_for",
    "monitoring_summary",
    "prediction_review",
    "predictions_create",
    "predictions_to_review",
    "route",
    "route_bucket",
    "serving_versions",
    "shadow_wait",
    "version_ood_calibrate",
]

logger = logging.getLogger(__name__)

OOD_METHOD = "max_softmax"
# The out-of-domain score is 1 - max softmax; a prediction is out of domain when its score
# is above this percentile of the version's validation images' scores.
OOD_PERCENTILE = 95
OOD_METHOD_DESCRIPTIONS = {
    OOD_METHOD: (
        f"max-softmax: score = 1 − the top class's probability; out of domain above the "
        f"{OOD_PERCENTILE}th percentile of the version's validation images"
    ),
}
SERVING_STAGES = (
    ModelVersion.Stage.LIVE,
    ModelVersion.Stage.LIMITED,
    ModelVersion.Stage.SHADOW,
)
MAX_BATCH_IMAGES = 64
LAST_USED_EVERY = timedelta(minutes=1)


class NoLiveModel(Exception):
    """The project has no live version to answer with."""


class ModelUnavailable(Exception):
    """A version's model cannot be loaded (a changed file, a missing file); nothing was served."""


# Routing ------------------------------------------------------------------------------


def route_bucket(*, project_id: int, key: str) -> int:
    """A stable bucket 0-99 for (project, key): one client always lands in the same one."""
    digest = hashlib.sha256(f"{project_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


@dataclass
class ServingVersions:
    live: ModelVersion | None = None
    limited: ModelVersion | None = None
    shadows: list[ModelVersion] = field(default_factory=list)

    @property
    def all(self) -> list[ModelVersion]:
        return [v for v in (self.live, self.limited, *self.shadows) if v is not None]


def serving_versions(*, project: Project) -> ServingVersions:
    """The project's live, limited and shadow versions, in one small query."""
    found = ServingVersions()
    rows = ModelVersion.objects.filter(project=project, stage__in=SERVING_STAGES).only(
        "pk",
        "project_id",
        "number",
        "stage",
        "traffic_share",
        "paused_reason",
        "export_file",
        "export_sha256",
        "vocab",
        "ood_method",
        "ood_threshold",
    )
    for version in sorted(rows, key=lambda v: -v.number):
        if version.stage == ModelVersion.Stage.LIVE and found.live is None:
            found.live = version
        elif version.stage == ModelVersion.Stage.LIMITED and found.limited is None:
            found.limited = version
        elif version.stage == ModelVersion.Stage.SHADOW:
            found.shadows.append(version)
    return found


def route(*, project_id: int, key: str, versions: ServingVersions) -> ModelVersion:
    """The version that answers a request with routing key ``key``."""
    limited = versions.limited
    if (
        limited is not None
        and not limited.paused_reason
        and route_bucket(project_id=project_id, key=key) < limited.traffic_share
    ):
        return limited
    if versions.live is None:
        raise NoLiveModel(
            "This project has no live model version, so it cannot answer predictions yet. "
            "Roll a version out to live on its Models page first."
        )
    return versions.live


# The model cache --------------------------------------------------------------------


@dataclass
class _CachedModel:
    project_id: int
    sha256: str
    predictor: object  # trainer.Predictor


_models: dict[int, _CachedModel] = {}
_models_lock = threading.Lock()


def model_for(version: ModelVersion):
    """The version's loaded Predictor: loaded once per process, its sha256 checked first."""
    cached = _models.get(version.pk)
    if cached is not None and cached.sha256 == version.export_sha256:
        return cached.predictor
    with _models_lock:
        cached = _models.get(version.pk)
        if cached is not None and cached.sha256 == version.export_sha256:
            return cached.predictor
        from trainer import Predictor, TrainingError

        try:
            predictor = Predictor.load(version.artifact_path(), version.export_sha256)
        except TrainingError as exc:
            logger.error(
                "Model %s of project %s not loaded: %s", version.pk, version.project_id, exc
            )
            raise ModelUnavailable(f"Model v{version.number} cannot be served: {exc}") from exc
        _models[version.pk] = _CachedModel(version.project_id, version.export_sha256, predictor)
        return predictor


def _models_sync(*, project_id: int, active: list[ModelVersion]) -> None:
    """Drop the project's cached models that no longer serve (retired, rolled back)."""
    keep = {v.pk for v in active}
    stale = [pk for pk, m in _models.items() if m.project_id == project_id and pk not in keep]
    if stale:
        with _models_lock:
            for pk in stale:
                _models.pop(pk, None)


def model_cache_version_ids() -> set[int]:
    """The versions whose models this process holds."""
    return set(_models)


def model_cache_clear() -> None:
    with _models_lock:
        _models.clear()


# OOD calibration ----------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def version_ood_calibrate(*, version: ModelVersion) -> tuple[str, float | None]:
    """The version's OOD method and threshold, calibrated on its validation scores once.

    None as the threshold: the version has no validation scores (versions are scored when
    they are trained, so it never will), so nothing it answers is flagged out of domain.
    """
    if version.ood_method:
        return version.ood_method, version.ood_threshold
    rows = ImageScore.objects.filter(version_id=version.pk, split=Image.Split.VALID)
    scores = [1 - max(p) for p in rows.values_list("probabilities", flat=True) if p]
    threshold = _percentile(scores, OOD_PERCENTILE) if scores else None
    ModelVersion.objects.filter(pk=version.pk).update(
        ood_method=OOD_METHOD, ood_threshold=threshold
    )
    version.ood_method, version.ood_threshold = OOD_METHOD, threshold
    return OOD_METHOD, threshold


# Predictions --------------------------------------------------------------------------


def _decode_all(images: list[tuple[str, bytes]]) -> list[DecodedImage]:
    decoded, errors = [], []
    for name, data in images:
        reason = file_too_big(len(data))
        if not reason:
            try:
                decoded.append(image_decode(data))
                continue
            except ImageRejected as exc:
                reason = str(exc)
        errors.append(f"{name or 'image'}: {reason}")
    if errors:
        raise ValidationError({"image": errors})
    return decoded


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


# Requests being answered now, and when the last one ended: shadows wait for idle time.
_busy = {"requests": 0, "since": 0.0}
_busy_lock = threading.Lock()


def _answers(version: ModelVersion, decoded: list[DecodedImage]) -> tuple[list, float]:
    predictor = model_for(version)
    started = time.perf_counter()
    # Predictor.predict runs on the process's one inference thread, one call at a time:
    # requests and the shadow thread never run the model side by side.
    answers = predictor.predict([d.data for d in decoded])
    return answers, (time.perf_counter() - started) * 1000


def _request_started() -> None:
    with _busy_lock:
        _busy["requests"] += 1


def _request_ended() -> None:
    with _busy_lock:
        _busy["requests"] -= 1
        _busy["since"] = time.monotonic()


def _rows(
    *,
    project: Project,
    version: ModelVersion,
    answers: list,
    request_ids: list[uuid.UUID],
    files: list[tuple[str, str]],
    latency_ms: float,
    is_shadow: bool,
    common: dict,
) -> list[Prediction]:
    method, threshold = version_ood_calibrate(version=version)
    rows = []
    for answer, request_id, (name, sha256) in zip(answers, request_ids, files, strict=True):
        ood_score = 1 - answer.confidence
        is_ood = threshold is not None and ood_score > threshold
        rows.append(
            Prediction(
                project=project,
                version=version,
                stage=version.stage,
                request_id=request_id,
                is_shadow=is_shadow,
                file=name,
                sha256=sha256,
                label=answer.label,
                confidence=answer.confidence,
                probabilities=answer.probabilities,
                ood_score=ood_score,
                is_ood=is_ood,
                needs_review=not is_shadow
                and (answer.confidence < project.review_confidence or is_ood),
                latency_ms=latency_ms,
                **common,
            )
        )
    return rows


def _guard(version: ModelVersion) -> None:
    try:
        from .rollout import version_guard
    except ImportError:  # helper A's rollout module; without it there are no guardrails
        return
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
    _request_started()
    try:
        return _predictions_create(
            project=project, images=images, client=client, user=user, client_key=client_key
        )
    finally:
        _request_ended()


def _predictions_create(*, project, images, client, user, client_key) -> list[Prediction]:
    started = time.perf_counter()
    if not images:
        raise ValidationError({"image": "No image was sent: attach one as multipart 'image'."})
    if len(images) > MAX_BATCH_IMAGES:
        raise ValidationError(
            {"images": f"At most {MAX_BATCH_IMAGES} images per request; {len(images)} were sent."}
        )
    decoded = _decode_all(images)
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


def _shadows_answer_many(jobs: list[dict]) -> None:
    """Every shadow version answers the images of ``jobs`` (requests), in one batch per
    version; stored with is_shadow=True. Each job: project, shadows, decoded, request_ids,
    files, common."""
    rows = []
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for job in jobs:
        groups[(job["project"].pk, tuple(v.pk for v in job["shadows"]))].append(job)
    for group in groups.values():
        decoded = [d for job in group for d in job["decoded"]]
        for shadow in group[0]["shadows"]:
            try:
                answers, shadow_ms = _answers(shadow, decoded)
            except Exception:  # a shadow must never break serving, nor the other shadows
                logger.exception("Shadow version %s failed to answer", shadow.pk)
                continue
            start = 0
            for job in group:
                n = len(job["decoded"])
                rows += _rows(
                    project=job["project"],
                    version=shadow,
                    answers=answers[start : start + n],
                    request_ids=job["request_ids"],
                    files=job["files"],
                    latency_ms=shadow_ms,
                    is_shadow=True,
                    common=job["common"],
                )
                start += n
    if rows:
        Prediction.objects.bulk_create(rows)


def _shadows_answer(**job) -> None:
    _shadows_answer_many([job])


# Shadow answers wait in a queue for one background thread. It answers them in batches of
# up to SHADOW_BATCH_IMAGES when the process is idle (no request for SHADOW_IDLE_S), so
# shadows take no time from served requests; under sustained load it stops waiting once
# SHADOW_BACKLOG_IMAGES are queued, and shadows then share the cores with requests.
_shadow_queue: queue.Queue = queue.Queue()
_shadow_thread: threading.Thread | None = None
_shadow_lock = threading.Lock()
_shadow_backlog = {"images": 0}
SHADOW_BATCH_IMAGES = 32
SHADOW_IDLE_S = 0.05
SHADOW_BACKLOG_IMAGES = 512


def _wait_for_idle() -> None:
    """Return once no request has run for SHADOW_IDLE_S, or the backlog is too long.

    It sleeps until the moment the process could first be idle, so under steady traffic
    it wakes every SHADOW_IDLE_S, not every 10 ms: each waking takes the GIL from the
    request being answered.
    """
    while _shadow_backlog["images"] < SHADOW_BACKLOG_IMAGES:
        with _busy_lock:
            busy, since = _busy["requests"], _busy["since"]
        wait = SHADOW_IDLE_S if busy else since + SHADOW_IDLE_S - time.monotonic()
        if wait <= 0:
            return
        time.sleep(wait)


def _shadow_loop() -> None:
    while True:
        jobs = [_shadow_queue.get()]
        _wait_for_idle()
        images = len(jobs[0]["decoded"])
        while images < SHADOW_BATCH_IMAGES:
            try:
                job = _shadow_queue.get_nowait()
            except queue.Empty:
                break
            jobs.append(job)
            images += len(job["decoded"])
        close_old_connections()
        try:
            _shadows_answer_many(jobs)
        except Exception:
            logger.exception("Shadow answers of %s request(s) were lost", len(jobs))
        finally:
            connection.close()  # this thread's own connection
            with _shadow_lock:
                _shadow_backlog["images"] -= images
            for _ in jobs:
                _shadow_queue.task_done()


def _shadow_submit(job: dict) -> None:
    global _shadow_thread
    with _shadow_lock:
        if _shadow_thread is None or not _shadow_thread.is_alive():
            _shadow_thread = threading.Thread(target=_shadow_loop, name="loupe-shadow", daemon=True)
            _shadow_thread.start()
        _shadow_backlog["images"] += len(job["decoded"])
    _shadow_queue.put(job)


def shadow_wait(timeout: float | None = None) -> bool:
    """Wait until the shadow answers queued so far are stored (tests, benches, shutdown).

    False if ``timeout`` seconds passed first.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while _shadow_queue.unfinished_tasks:
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# Reviewing predictions ----------------------------------------------------------------


def predictions_to_review(*, project: Project, limit: int = 50) -> list[Prediction]:
    """Served predictions flagged for review and not reviewed yet, oldest first."""
    return list(
        Prediction.objects.filter(
            project=project, needs_review=True, reviewed_at__isnull=True, is_shadow=False
        )
        .select_related("version", "client")
        .order_by("created_at", "id")[:limit]
    )


def _served_of(field_name: str):
    return Subquery(
        Prediction.objects.filter(request_id=OuterRef("request_id"), is_shadow=False).values(
            field_name
        )[:1]
    )


def disagreements_to_review(*, project: Project, limit: int = 50) -> list[Prediction]:
    """Shadow answers that disagree with the served one, whose request nobody labeled yet.

    Each carries ``served``: the answer that was sent.
    """
    shadows = list(
        Prediction.objects.filter(project=project, is_shadow=True)
        .annotate(served_label=_served_of("label"), served_reviewed=_served_of("reviewed_at"))
        .filter(served_label__isnull=False, served_reviewed__isnull=True)
        .exclude(label=F("served_label"))
        .select_related("version")
        .order_by("created_at", "id")[:limit]
    )
    served = {
        p.request_id: p
        for p in Prediction.objects.filter(
            request_id__in=[s.request_id for s in shadows], is_shadow=False
        ).select_related("version")
    }
    for shadow in shadows:
        shadow.served = served.get(shadow.request_id)
    return [s for s in shadows if s.served is not None]


def _read_file(name: str) -> bytes:
    with default_storage.open(name, "rb") as f:
        return f.read()


@transaction.atomic
def prediction_review(
    *,
    prediction: Prediction,
    label: Category,
    actor,
    add_to_dataset: bool = False,
) -> Prediction:
    """Record the true class of a request: confirmed when the model said it, else corrected.

    Every stored answer of the request (shadow ones too) gets the reviewer's label, so a
    shadow version's accuracy on reviewed traffic is known. ``add_to_dataset`` also ingests
    the image into the project with that label (source: production), in the same action.
    """
    if label.project_id != prediction.project_id:
        raise ValidationError({"label": f"'{label.name}' is not a class of this project."})
    now = timezone.now()
    answers = list(
        Prediction.objects.select_for_update().filter(request_id=prediction.request_id)
    ) or [prediction]
    for answer in answers:
        answer.review = (
            Prediction.Review.CONFIRMED
            if answer.label == label.name
            else Prediction.Review.CORRECTED
        )
        answer.reviewed_label = label
        answer.reviewed_by = actor
        answer.reviewed_at = now
    if add_to_dataset:
        image_id = _prediction_ingest(prediction=prediction, label=label, actor=actor)
        for answer in answers:
            answer.added_image_id = image_id
    Prediction.objects.bulk_update(
        answers, ["review", "reviewed_label", "reviewed_by", "reviewed_at", "added_image"]
    )
    prediction.refresh_from_db()
    return prediction


def _prediction_ingest(*, prediction: Prediction, label: Category, actor) -> int:
    try:
        data = _read_file(prediction.file)
    except OSError:
        raise ValidationError(
            f"The image of prediction #{prediction.pk} is no longer stored; it cannot be added."
        ) from None
    result = image_ingest(
        project=prediction.project,
        data=data,
        name=f"prediction-{prediction.pk}.{prediction.file.rsplit('.', 1)[-1]}",
        label=label,
        source=Image.Source.PRODUCTION,
        actor=actor,
    )
    if result.status == "rejected" or result.image_id is None:
        raise ValidationError(f"The image could not be added: {result.reason}")
    return result.image_id


# Client tokens ------------------------------------------------------------------------


def client_token_create(*, project: Project, client: str, actor=None) -> tuple[ClientToken, str]:
    """A prediction client's token for ``project``; returns it with the key, never stored."""
    client = (client or "").strip()
    if not client:
        raise ValidationError({"client": "Name the client that will use the token."})
    if len(client) > 100:
        raise ValidationError({"client": "A client name has at most 100 characters."})
    key = ClientToken.generate_key()
    token = ClientToken.objects.create(
        project=project,
        client=client,
        key_hash=ClientToken.hash_key(key),
        prefix=key[:8],
        created_by=actor,
    )
    logger.info("Client token %s for %s created by %s", token.prefix, project.slug, actor)
    return token, key


def client_token_revoke(*, token: ClientToken, actor=None) -> ClientToken:
    """Revoke a client token; its next request gets a 401."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        logger.info("Client token %s revoked by %s", token.prefix, actor)
    return token


def client_token_list(*, project: Project) -> QuerySet[ClientToken]:
    return project.client_tokens.select_related("created_by").order_by("revoked_at", "client")


# Monitoring ---------------------------------------------------------------------------

HISTOGRAM_BINS = 10


@dataclass
class TimePoint:
    start: datetime
    total: int
    low_confidence: int
    ood: int
    needs_review: int

    @property
    def low_confidence_rate(self) -> float | None:
        return self.low_confidence / self.total if self.total else None

    @property
    def ood_rate(self) -> float | None:
        return self.ood / self.total if self.total else None


@dataclass
class ClassMix:
    name: str
    served: float  # share of served predictions
    training: float  # share of the training images


@dataclass
class ShadowAgreement:
    version: ModelVersion
    compared: int
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


@dataclass
class Monitoring:
    since: datetime
    by_hour: bool
    total: int
    points: list[TimePoint]
    histogram: list[int]  # counts per confidence bin of width 1 / HISTOGRAM_BINS
    class_mix: list[ClassMix]
    total_variation: float | None
    psi: float | None
    training_version: ModelVersion | None
    shadows: list[ShadowAgreement]
    reviewed: int
    corrected: int
    to_review: int

    @property
    def override_rate(self) -> float | None:
        return self.corrected / self.reviewed if self.reviewed else None

    @property
    def low_confidence_rate(self) -> float | None:
        total = sum(p.total for p in self.points)
        return sum(p.low_confidence for p in self.points) / total if total else None

    @property
    def ood_rate(self) -> float | None:
        total = sum(p.total for p in self.points)
        return sum(p.ood for p in self.points) / total if total else None


def _training_mix(version: ModelVersion | None) -> dict[str, int]:
    """Training images per class of ``version``: its run's snapshot, else its scores."""
    if version is None:
        return {}
    run = getattr(version, "run", None) if version.run_id else None
    if run is not None and run.snapshot:
        return dict(Counter(label for _, label, split in run.snapshot if split == "train"))
    rows = (
        ImageScore.objects.filter(version=version, in_training=True)
        .values("label__name")
        .annotate(n=Count("id"))
    )
    return {r["label__name"]: r["n"] for r in rows if r["label__name"]}


def drift_scores(served: dict[str, float], training: dict[str, float]) -> tuple[float, float]:
    """Total variation distance and the population stability index of two class mixes."""
    names = set(served) | set(training)
    tv = 0.5 * sum(abs(served.get(n, 0.0) - training.get(n, 0.0)) for n in names)
    eps = 1e-4  # an empty class would make PSI infinite
    psi = 0.0
    for n in names:
        p, q = max(served.get(n, 0.0), eps), max(training.get(n, 0.0), eps)
        psi += (p - q) * math.log(p / q)
    return tv, psi


def monitoring_summary(*, project: Project, days: int = 14) -> Monitoring:
    """The numbers of the monitoring page, over the last ``days`` days."""
    now = timezone.now()
    since = now - timedelta(days=days)
    served = Prediction.objects.filter(project=project, is_shadow=False, created_at__gte=since)
    first = served.order_by("created_at").values_list("created_at", flat=True).first()
    by_hour = first is None or now - first <= timedelta(hours=48)
    trunc = TruncHour if by_hour else TruncDay
    low = Q(confidence__lt=project.review_confidence)
    rows = (
        served.annotate(bucket=trunc("created_at"))
        .values("bucket")
        .annotate(
            total=Count("id"),
            low=Count("id", filter=low),
            ood=Count("id", filter=Q(is_ood=True)),
            review=Count("id", filter=Q(needs_review=True)),
        )
        .order_by("bucket")
    )
    points = [TimePoint(r["bucket"], r["total"], r["low"], r["ood"], r["review"]) for r in rows]
    histogram = [0] * HISTOGRAM_BINS
    confidences = served.values_list("confidence", flat=True)
    for confidence in confidences.iterator(chunk_size=5000):
        histogram[min(HISTOGRAM_BINS - 1, max(0, int(confidence * HISTOGRAM_BINS)))] += 1
    total = sum(histogram)

    versions = serving_versions(project=project)
    training_version = versions.live
    if training_version is not None:
        training_version = ModelVersion.objects.select_related("run").get(pk=training_version.pk)
    training_counts = _training_mix(training_version)
    served_counts = dict(served.values_list("label").annotate(n=Count("id")).order_by())
    names = sorted(set(training_counts) | set(served_counts))
    n_training = sum(training_counts.values())
    n_served = sum(served_counts.values())
    served_mix = {n: served_counts.get(n, 0) / n_served for n in names} if n_served else {}
    training_mix = {n: training_counts.get(n, 0) / n_training for n in names} if n_training else {}
    tv = psi = None
    if served_mix and training_mix:
        tv, psi = drift_scores(served_mix, training_mix)
    class_mix = [ClassMix(n, served_mix.get(n, 0.0), training_mix.get(n, 0.0)) for n in names]

    shadows = []
    shadow_rows = (
        Prediction.objects.filter(project=project, is_shadow=True, created_at__gte=since)
        .annotate(served_label=_served_of("label"))
        .filter(served_label__isnull=False)
        .values("version")
        .annotate(
            compared=Count("id"),
            agreed=Count("id", filter=Q(label=F("served_label"))),
        )
    )
    by_version = {v.pk: v for v in project.model_versions.only("pk", "number", "stage")}
    for row in shadow_rows:
        version = by_version.get(row["version"])
        if version is not None:
            shadows.append(ShadowAgreement(version, row["compared"], row["agreed"]))
    shadows.sort(key=lambda s: -s.version.number)

    reviewed = served.exclude(review="")
    return Monitoring(
        since=since,
        by_hour=by_hour,
        total=total,
        points=points,
        histogram=histogram,
        class_mix=class_mix,
        total_variation=tv,
        psi=psi,
        training_version=training_version,
        shadows=shadows,
        reviewed=reviewed.count(),
        corrected=reviewed.filter(review=Prediction.Review.CORRECTED).count(),
        to_review=served.filter(needs_review=True, reviewed_at__isnull=True).count(),
    )


def request_answers(*, request_id) -> dict[str, list[Prediction]]:
    """Every stored answer of one request, grouped served / shadow (for the admin and tests)."""
    grouped: dict[str, list[Prediction]] = defaultdict(list)
    for p in Prediction.objects.filter(request_id=request_id).select_related("version"):
        grouped["shadow" if p.is_shadow else "served"].append(p)
    return dict(grouped)
