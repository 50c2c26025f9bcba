"""Plain dataclasses in and out of the trainer."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ARCHITECTURES",
    "BACKBONE_FILES",
    "BACKBONE_URL",
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
]

# torchvision's published ImageNet weights for each backbone Loupe offers (its DEFAULT
# weights); tests/trainer/test_weights.py checks these against torchvision's registry.
BACKBONE_URL = "https://download.pytorch.org/models/"
BACKBONE_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-11ad3fa6.pth",
    "efficientnet_b0": "efficientnet_b0_rwightman-7f5810bc.pth",
    "convnext_tiny": "convnext_tiny-983f1562.pth",
    "mobilenet_v3_large": "mobilenet_v3_large-5c1a4163.pth",
    "regnet_y_800mf": "regnet_y_800mf-58fc7688.pth",
}
ARCHITECTURES = tuple(BACKBONE_FILES)
RESIZE_METHODS = ("crop", "pad", "squish", "random_resized_crop")
PRETRAINED_CHOICES = ("auto", "on", "off")


class ConfigError(ValueError):
    """A training setting is out of range; the message names it."""


class TrainingError(RuntimeError):
    """Training failed for a reason a person can act on (bad data, too few images)."""


class TrainingCancelled(RuntimeError):
    """``should_stop()`` asked training to stop."""


@dataclass
class TrainConfig:
    """The choices a practitioner makes for a DataBlock, a learner and ``fine_tune``."""

    architecture: str = "resnet18"
    image_size: int = 128
    resize_method: str = "random_resized_crop"
    min_scale: float = 0.5  # random_resized_crop's smallest share of the image
    augment: bool = True
    # aug_transforms knobs that matter
    do_flip: bool = True
    flip_vert: bool = False
    max_rotate: float = 10.0
    max_zoom: float = 1.1
    max_lighting: float = 0.2
    max_warp: float = 0.2
    epochs: int = 3
    freeze_epochs: int = 1
    learning_rate: float | None = 2e-3  # None: use the lr finder's suggestion
    batch_size: int = 32
    seed: int = 42
    pretrained: str = "auto"  # auto: ImageNet weights when they can be had, else from scratch

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        def need(condition: bool, message: str) -> None:
            if not condition:
                raise ConfigError(message)

        need(self.architecture in ARCHITECTURES, f"architecture must be one of {ARCHITECTURES}")
        need(16 <= self.image_size <= 1024, "image_size must be between 16 and 1024")
        need(self.resize_method in RESIZE_METHODS, f"resize_method must be one of {RESIZE_METHODS}")
        need(0.05 <= self.min_scale <= 1.0, "min_scale must be between 0.05 and 1")
        need(1 <= self.epochs <= 200, "epochs must be between 1 and 200")
        need(0 <= self.freeze_epochs <= 20, "freeze_epochs must be between 0 and 20")
        need(
            self.learning_rate is None or 1e-7 <= self.learning_rate <= 1.0,
            "learning_rate must be between 1e-7 and 1 (or empty for the lr finder)",
        )
        need(1 <= self.batch_size <= 1024, "batch_size must be between 1 and 1024")
        need(
            self.pretrained in PRETRAINED_CHOICES, f"pretrained must be one of {PRETRAINED_CHOICES}"
        )
        need(0 <= self.max_rotate <= 180, "max_rotate must be between 0 and 180")
        need(1.0 <= self.max_zoom <= 4.0, "max_zoom must be between 1 and 4")
        need(0 <= self.max_lighting <= 1, "max_lighting must be between 0 and 1")
        need(0 <= self.max_warp <= 1, "max_warp must be between 0 and 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a stored snapshot, ignoring keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class PretrainedWeights:
    """The ImageNet weights a run should fine-tune from, as its caller found them."""

    path: Path | None  # None: none could be had, and ``note`` says why
    sha256: str = ""  # checked before the file is read, when given
    note: str = ""


def _finite(value: float) -> float | None:
    """NaN and infinity become None, so metrics stay valid JSON."""
    return value if math.isfinite(value) else None


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    valid_loss: float
    error_rate: float
    accuracy: float
    phase: str  # "frozen" or "unfrozen"

    def to_dict(self) -> dict[str, Any]:
        return {
            k: _finite(v) if isinstance(v, float) else v
            for k, v in dataclasses.asdict(self).items()
        }


@dataclass
class TrainResult:
    export_path: Path  # fastai's learn.export() pickle
    weights_path: Path  # plain state_dict
    config_path: Path  # the config and the artifacts' sha256, beside them
    vocab: list[str]
    epochs: list[EpochMetrics]
    error_rate: float
    accuracy: float
    per_class: list[dict[str, Any]]  # name, precision, recall, support
    confusion_matrix: list[list[int]]  # rows: actual, columns: predicted, in vocab order
    duration_s: float
    pretrained: bool
    pretrained_note: str
    device: str
    learning_rate: float
    n_train: int
    n_valid: int
    sha256: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"  # "fp16 mixed" when trained with to_fp16() on a GPU
    onnx: Any = None  # trainer.onnx_export.OnnxExport, None when not asked for

    def metrics_dict(self) -> dict[str, Any]:
        return {
            "error_rate": self.error_rate,
            "accuracy": self.accuracy,
            "per_class": self.per_class,
            "epochs": [e.to_dict() for e in self.epochs],
            "duration_s": self.duration_s,
            "pretrained": self.pretrained,
            "pretrained_note": self.pretrained_note,
            "device": self.device,
            "precision": self.precision,
            "learning_rate": self.learning_rate,
            "n_train": self.n_train,
            "n_valid": self.n_valid,
        }


@dataclass
class ItemScore:
    path: str
    label: str | None  # the given label, None when unlabeled or not in the vocab
    predicted: str
    confidence: float
    loss: float | None  # None when there is no usable label
    probabilities: list[float]
