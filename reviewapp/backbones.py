"""ImageNet backbone weights in Loupe's shared storage: fetch, import, and find them for a run.

The files live under ``MEDIA_ROOT/weights/`` (shared by every worker machine) and each has a
BackboneWeights row with its sha256; ``trainer.weights`` does the downloading and checking.
"""

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from trainer import ARCHITECTURES, PretrainedWeights
from trainer.config import BACKBONE_FILES

from . import enqueue as jobs
from .models import BackboneWeights, WeightsFetch

__all__ = [
    "BackboneRow",
    "backbone_fetch",
    "backbone_import",
    "backbone_rows",
    "present_architectures",
    "pretrained_weights_for",
    "weights_fetch_create",
    "weights_fetch_execute",
]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


def _store_dir() -> Path:
    return Path(settings.MEDIA_ROOT) / "weights"


def _relative(path: Path) -> str:
    return str(Path(path).resolve().relative_to(Path(settings.MEDIA_ROOT).resolve()))


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ValidationError(
            {"architecture": f"Architecture must be one of {', '.join(ARCHITECTURES)}."}
        )


def _store(
    *, architecture: str, path: Path, sha256: str, size: int, origin: str, source: str, actor=None
) -> BackboneWeights:
    """Record ``path`` (already in the store) as the architecture's weights, replacing any."""
    with transaction.atomic():
        old = BackboneWeights.objects.select_for_update().filter(architecture=architecture).first()
        values = dict(
            file=_relative(path),
            sha256=sha256,
            size=size,
            origin=origin,
            source=source[:500],
            added_by=actor,
            added_at=timezone.now(),
        )
        if old is None:
            try:
                with transaction.atomic():
                    return BackboneWeights.objects.create(architecture=architecture, **values)
            except IntegrityError:  # another worker stored it at the same moment
                old = BackboneWeights.objects.select_for_update().get(architecture=architecture)
        previous = Path(settings.MEDIA_ROOT) / old.file
        for name, value in values.items():
            setattr(old, name, value)
        old.save()
    if previous.resolve() != Path(path).resolve():
        previous.unlink(missing_ok=True)
    return old


def backbone_fetch(
    *, architecture: str, actor=None, on_progress: ProgressFn | None = None
) -> BackboneWeights:
    """Download the architecture's weights into the store; raises WeightsError with why not."""
    from trainer.weights import fetch, spec_for

    _check_architecture(architecture)
    got = fetch(
        spec_for(architecture),
        _store_dir(),
        base_url=settings.LOUPE_WEIGHTS_URL or None,
        offline=settings.LOUPE_OFFLINE,
        on_progress=on_progress,
        timeout=settings.LOUPE_WEIGHTS_TIMEOUT,
    )
    return _store(
        architecture=architecture,
        path=got.path,
        sha256=got.sha256,
        size=got.size,
        origin=BackboneWeights.Origin.FETCHED,
        source=got.source,
        actor=actor,
    )


def backbone_import(
    *, architecture: str, source: Path, original_name: str = "", actor=None, origin=None
) -> BackboneWeights:
    """Check a weights file from elsewhere and copy it into the store.

    It must load with ``torch.load(weights_only=True)`` and fit the architecture; a file
    named as torchvision names it must also carry its hash prefix. Nothing is stored
    otherwise: a ValidationError says why.
    """
    from trainer.weights import (
        WeightsError,
        check_hash_prefix,
        load_backbone_state,
        sha256_file,
        spec_for,
    )

    _check_architecture(architecture)
    source = Path(source)
    spec = spec_for(architecture)
    original_name = original_name or source.name
    try:
        load_backbone_state(architecture, source)
        sha256 = sha256_file(source)
        if Path(original_name).name == spec.filename:
            check_hash_prefix(spec, sha256)
    except WeightsError as exc:
        raise ValidationError({"file": str(exc)}) from None
    # torchvision's own file keeps its name; other weights are named by their own hash.
    name = (
        spec.filename if sha256.startswith(spec.hash_prefix) else f"{architecture}-{sha256[:8]}.pth"
    )
    store = _store_dir()
    store.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=store)
    tmp = Path(tmp_name)
    try:
        with open(fd, "wb") as out, open(source, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        target = store / name
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return _store(
        architecture=architecture,
        path=target,
        sha256=sha256,
        size=target.stat().st_size,
        origin=origin or BackboneWeights.Origin.IMPORTED,
        source=f"imported from {original_name}",
        actor=actor,
    )


@dataclass
class BackboneRow:
    """One architecture on the Backbones page and in ``manage.py weights list``."""

    architecture: str
    filename: str  # torchvision's
    weights: BackboneWeights | None
    fetch: WeightsFetch | None  # the latest one

    @property
    def present(self) -> bool:
        return self.weights is not None


def backbone_rows() -> list[BackboneRow]:
    stored = {w.architecture: w for w in BackboneWeights.objects.select_related("added_by")}
    fetches: dict[str, WeightsFetch] = {}
    for job in WeightsFetch.objects.order_by("architecture", "-id").distinct():
        fetches.setdefault(job.architecture, job)
    return [
        BackboneRow(arch, BACKBONE_FILES[arch], stored.get(arch), fetches.get(arch))
        for arch in ARCHITECTURES
    ]


def present_architectures() -> set[str]:
    return set(BackboneWeights.objects.values_list("architecture", flat=True))


# A run's weights --------------------------------------------------------------------


def _from_store(architecture: str) -> PretrainedWeights | None:
    row = BackboneWeights.objects.filter(architecture=architecture).first()
    if row is None:
        return None
    path = Path(settings.MEDIA_ROOT) / row.file
    if not path.exists():
        logger.warning(
            "The stored %s weights %s are missing; looking elsewhere", architecture, path
        )
        return None
    return PretrainedWeights(path, sha256=row.sha256, note="from Loupe's store")


def _from_torch_cache(architecture: str) -> PretrainedWeights | None:
    """A file torch.hub (or fastai) already downloaded here: copied into the store."""
    from trainer.weights import hub_cache_path, spec_for

    path = hub_cache_path(spec_for(architecture))
    if not path.exists():
        return None
    try:
        backbone_import(
            architecture=architecture, source=path, origin=BackboneWeights.Origin.TORCH_CACHE
        )
    except ValidationError as exc:
        logger.warning("Not using %s from the torch cache: %s", path, " ".join(exc.messages))
        return None
    return _from_store(architecture)


def pretrained_weights_for(
    config: dict, *, fetch: bool = True, on_download_start=None, on_progress=None
) -> PretrainedWeights | None:
    """The weights a run with ``config`` fine-tunes from: the store, the torch cache, then a
    download (when ``fetch``); or why there are none. None when pretrained is off."""
    from trainer.weights import WeightsError

    architecture = config.get("architecture", "resnet18")
    if config.get("pretrained", "auto") == "off" or architecture not in ARCHITECTURES:
        return None
    found = _from_store(architecture) or _from_torch_cache(architecture)
    if found is not None:
        return found
    if not fetch:
        return PretrainedWeights(None, note=f"no {architecture} weights in Loupe's store")
    if settings.LOUPE_OFFLINE:
        return PretrainedWeights(
            None,
            note=f"no {architecture} weights in Loupe's store, and LOUPE_OFFLINE=1 forbids "
            "fetching them (import them on the Backbones page)",
        )
    if on_download_start is not None:
        on_download_start()
    try:
        backbone_fetch(architecture=architecture, on_progress=on_progress)
    except WeightsError as exc:
        return PretrainedWeights(None, note=f"fetching the {architecture} weights failed: {exc}")
    return _from_store(architecture)


# Fetch jobs of the Backbones page ------------------------------------------------------


def weights_fetch_create(*, architecture: str, actor=None, enqueue: bool = True) -> WeightsFetch:
    """Queue a download; one already queued or running for the architecture is returned."""
    _check_architecture(architecture)
    with transaction.atomic():
        running = (
            WeightsFetch.objects.select_for_update()
            .filter(architecture=architecture)
            .exclude(status__in=WeightsFetch.FINISHED)
            .first()
        )
        if running is not None:
            return running
        job = WeightsFetch.objects.create(architecture=architecture, requested_by=actor)
        if enqueue:
            jobs.send(jobs.WEIGHTS_FETCH, job.pk)
    return job


def weights_fetch_execute(*, fetch_id: int) -> None:
    """Run one queued download, keeping its progress on the job row."""
    from trainer.weights import WeightsError

    claimed = WeightsFetch.objects.filter(pk=fetch_id, status=WeightsFetch.Status.PENDING).update(
        status=WeightsFetch.Status.RUNNING, started_at=timezone.now()
    )
    if not claimed:
        return
    job = WeightsFetch.objects.select_related("requested_by").get(pk=fetch_id)

    def progress(done: int, total: int) -> None:
        WeightsFetch.objects.filter(pk=fetch_id).update(progress_done=done, progress_total=total)

    try:
        backbone_fetch(architecture=job.architecture, actor=job.requested_by, on_progress=progress)
    except WeightsError as exc:
        _fetch_finish(fetch_id, WeightsFetch.Status.FAILED, str(exc))
    except Exception as exc:
        _fetch_finish(fetch_id, WeightsFetch.Status.FAILED, f"Unexpected error: {exc}")
        raise
    else:
        _fetch_finish(fetch_id, WeightsFetch.Status.SUCCEEDED)


def _fetch_finish(fetch_id: int, status: str, message: str = "") -> None:
    WeightsFetch.objects.filter(pk=fetch_id).update(
        status=status, error_message=message, finished_at=timezone.now()
    )
