"""Loupe's ML side: fastai training and scoring on paths and labels. Never imports Django.

The config dataclasses load at once; torch and fastai load only when a function that
needs them is first used, so a web process that only builds configs stays light.
"""

from importlib import import_module

from .config import (
    ARCHITECTURES,
    PRETRAINED_CHOICES,
    RESIZE_METHODS,
    ConfigError,
    EpochMetrics,
    ItemScore,
    PretrainedWeights,
    TrainConfig,
    TrainingCancelled,
    TrainingError,
    TrainResult,
)

# Out-of-fold scoring (trainer/folds.py), label rankings (trainer/ranking.py) and how far
# to trust them (trainer/trust.py).
_FOLDS = ("assign_folds", "embed", "fit_linear_folds", "train_fold")
_RANKING = (
    "DEFAULT_RANKING",
    "RANKINGS",
    "confident_learning",
    "loss",
    "near_duplicates",
    "normalized_margin",
    "outlier_scores",
    "rank",
    "self_confidence",
)
_TRUST = ("Trust", "issue_range", "out_of_fold_trust", "version_trust")

_LEARNING = (
    "iter_scores",
    "load_learner_checked",
    "pick_device",
    "score",
    "train",
)

_PREDICT = ("Predictor",)
_INFERENCE = ("BatchingPredictor", "ImagePrediction", "answers_from_logits", "on_inference_thread")
_ARTIFACTS = ("ArtifactMismatch", "check_artifact", "sha256_file")
# ONNX: the export needs torch; serving it (trainer.onnx_serving) and the preprocessing
# (trainer.preprocess) do not, so a web process serving ONNX never imports torch.
_ONNX_EXPORT = ("OnnxExport", "export_onnx", "preprocessing_spec")
_ONNX_SERVING = ("OnnxPredictor", "onnx_providers")
_PREPROCESS = ("SpecError",)  # the function: trainer.preprocess.preprocess

__all__ = [
    "ARCHITECTURES",
    "PRETRAINED_CHOICES",
    "RESIZE_METHODS",
    "ConfigError",
    "EpochMetrics",
    "ItemScore",
    "PretrainedWeights",
    "TrainConfig",
    "TrainResult",
    "TrainingCancelled",
    "TrainingError",
    *_LEARNING,
    *_PREDICT,
    *_INFERENCE,
    *_ARTIFACTS,
    *_ONNX_EXPORT,
    *_ONNX_SERVING,
    *_PREPROCESS,
    *_FOLDS,
    *_RANKING,
    *_TRUST,
]


def __getattr__(name: str):
    if name in _ARTIFACTS:
        return getattr(import_module(".artifacts", __name__), name)
    if name in _INFERENCE:
        return getattr(import_module(".inference", __name__), name)
    if name in _ONNX_EXPORT:
        return getattr(import_module(".onnx_export", __name__), name)
    if name in _ONNX_SERVING:
        return getattr(import_module(".onnx_serving", __name__), name)
    if name in _PREPROCESS:
        return getattr(import_module(".preprocess", __name__), name)
    if name in _LEARNING:
        return getattr(import_module(".learning", __name__), name)
    if name in _FOLDS:
        return getattr(import_module(".folds", __name__), name)
    if name in _RANKING:
        return getattr(import_module(".ranking", __name__), name)
    if name in _TRUST:
        return getattr(import_module(".trust", __name__), name)
    if name in _PREDICT:
        return getattr(import_module(".predict", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
