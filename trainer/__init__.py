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
    TrainConfig,
    TrainingCancelled,
    TrainingError,
    TrainResult,
)

_LEARNING = (
    "iter_scores",
    "load_learner_checked",
    "pick_device",
    "score",
    "sha256_file",
    "train",
)

__all__ = [
    "ARCHITECTURES",
    "PRETRAINED_CHOICES",
    "RESIZE_METHODS",
    "ConfigError",
    "EpochMetrics",
    "ItemScore",
    "TrainConfig",
    "TrainResult",
    "TrainingCancelled",
    "TrainingError",
    *_LEARNING,
]


def __getattr__(name: str):
    if name in _LEARNING:
        return getattr(import_module(".learning", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
