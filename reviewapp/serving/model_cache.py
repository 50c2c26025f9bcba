"""The per-process model cache: each serving version's model, loaded once, checked first.

A version whose ONNX export passed its parity check is served by ONNX Runtime (nothing
unpickled, fastai never imported); any other by torch from fastai's export. Either file's
sha256 is checked against the database before it is loaded.
"""

import logging
import threading
from dataclasses import dataclass

from django.conf import settings

from ..models import ModelVersion

__all__ = [
    "ModelUnavailable",
    "model_cache_clear",
    "model_cache_current",
    "model_cache_version_ids",
    "model_for",
    "models_keep_only",
    "runtime_for",
]

logger = logging.getLogger(__name__)

ONNXRUNTIME, TORCH = "onnxruntime", "torch"


class ModelUnavailable(Exception):
    """A version's model cannot be loaded (a changed file, a missing file); nothing was served."""


@dataclass
class _CachedModel:
    project_id: int
    key: tuple[str, str]  # (runtime, sha256 of the file it was loaded from)
    predictor: object  # trainer.BatchingPredictor: OnnxPredictor or Predictor


_models: dict[int, _CachedModel] = {}
_models_lock = threading.Lock()


def runtime_for(version: ModelVersion) -> str:
    """What serves ``version``: ONNX Runtime when its export passed parity, else torch."""
    if settings.LOUPE_SERVING_RUNTIME == TORCH or not version.onnx_servable:
        return TORCH
    return ONNXRUNTIME


def _key(version: ModelVersion) -> tuple[str, str]:
    runtime = runtime_for(version)
    return runtime, version.onnx_sha256 if runtime == ONNXRUNTIME else version.export_sha256


def _load(version: ModelVersion, runtime: str):
    if runtime == ONNXRUNTIME:
        from trainer.onnx_serving import OnnxPredictor

        return OnnxPredictor.load(
            version.artifact_path("onnx"), version.onnx_sha256, version.onnx_spec
        )
    from trainer.predict import Predictor

    return Predictor.load(version.artifact_path(), version.export_sha256)


def model_for(version: ModelVersion):
    """The version's loaded predictor: loaded once per process, its sha256 checked first.

    A tampered or missing file is refused (ModelUnavailable), never replaced by the other
    runtime: a file that changed under Loupe is something to look into, not to route around.
    """
    key = _key(version)
    cached = _models.get(version.pk)
    if cached is not None and cached.key == key:
        return cached.predictor
    with _models_lock:
        cached = _models.get(version.pk)
        if cached is not None and cached.key == key:
            return cached.predictor
        from trainer import TrainingError

        try:
            predictor = _load(version, key[0])
        except TrainingError as exc:
            logger.error(
                "Model %s of project %s not loaded (%s): %s",
                version.pk,
                version.project_id,
                key[0],
                exc,
            )
            raise ModelUnavailable(f"Model v{version.number} cannot be served: {exc}") from exc
        _models[version.pk] = _CachedModel(version.project_id, key, predictor)
        logger.info("Model %s (v%s) loaded with %s", version.pk, version.number, key[0])
        return predictor


def _models_sync(*, project_id: int, active: list[ModelVersion]) -> None:
    """Drop the project's cached models that no longer serve (retired, rolled back)."""
    keep = {v.pk for v in active}
    stale = [pk for pk, m in _models.items() if m.project_id == project_id and pk not in keep]
    if stale:
        with _models_lock:
            for pk in stale:
                _models.pop(pk, None)


def models_keep_only(version_ids: set[int]) -> list[int]:
    """Drop every cached model but these (the serving versions of all projects)."""
    with _models_lock:
        stale = [pk for pk in _models if pk not in version_ids]
        for pk in stale:
            _models.pop(pk, None)
    return stale


def model_cache_current(version: ModelVersion) -> bool:
    """Whether this process holds ``version``'s model as it would load it now (same runtime,
    same file): a version exported to ONNX since it was loaded is not current."""
    cached = _models.get(version.pk)
    return cached is not None and cached.key == _key(version)


def model_cache_version_ids() -> set[int]:
    """The versions whose models this process holds."""
    return set(_models)


def model_cache_clear() -> None:
    with _models_lock:
        _models.clear()
