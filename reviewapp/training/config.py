"""A run's settings: the project's DataBlock choices, CPU defaults, then what the run asks."""

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Count

from ..models import Image, Project, TrainingRun

# Settings a run may override; the rest come from the project's DataBlock choices.
CONFIG_FIELDS = (
    "architecture",
    "image_size",
    "resize_method",
    "augment",
    "epochs",
    "freeze_epochs",
    "learning_rate",
    "batch_size",
    "seed",
    "pretrained",
    "min_scale",
    "do_flip",
    "flip_vert",
    "max_rotate",
    "max_zoom",
    "max_lighting",
    "max_warp",
)
# A run started without choices: small enough to finish in minutes on a laptop's CPU.
CPU_DEFAULTS = {"architecture": "resnet18", "epochs": 3, "freeze_epochs": 1, "batch_size": 32}


def train_config_for(project: Project, overrides: dict[str, Any] | None = None):
    """The TrainConfig for ``project``: its DataBlock choices, CPU defaults, then overrides."""
    from trainer import ConfigError, TrainConfig

    values: dict[str, Any] = {
        **CPU_DEFAULTS,
        "image_size": project.image_size,
        "resize_method": project.resize_method,
        "augment": project.augment,
        "seed": project.split_seed,
    }
    unknown = set(overrides or {}) - set(CONFIG_FIELDS)
    if unknown:
        raise ValidationError({name: "Not a training setting." for name in sorted(unknown)})
    # None means "the default", except for the learning rate, where it means "lr finder".
    values.update(
        {k: v for k, v in (overrides or {}).items() if v is not None or k == "learning_rate"}
    )
    try:
        return TrainConfig(**values)
    except ConfigError as exc:
        field = next((name for name in CONFIG_FIELDS if str(exc).startswith(name)), None)
        raise ValidationError({field: str(exc)} if field else str(exc)) from None
    except TypeError as exc:
        raise ValidationError(f"A training setting has the wrong type: {exc}") from None


def trainable_counts(project: Project) -> dict[str, dict[str, int]]:
    rows = (
        Image.objects.filter(project=project, status=Image.Status.ACTIVE, label__isnull=False)
        .values_list("label__name", "split")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: dict[str, dict[str, int]] = {}
    for name, split, n in rows:
        counts.setdefault(name, {"train": 0, "valid": 0})[split] += n
    return counts


def check_trainable(project: Project) -> None:
    counts = trainable_counts(project)
    if len(counts) < 2:
        raise ValidationError(
            f"Training needs labeled images in at least two classes; this project has "
            f"{len(counts)}. Upload or label more images first."
        )
    train = sum(c["train"] for c in counts.values())
    valid = sum(c["valid"] for c in counts.values())
    if not train or not valid:
        raise ValidationError(
            f"Training needs labeled images in both splits (train: {train}, valid: {valid}). "
            "Add images or change the validation share in the project's settings."
        )


def last_successful_config(project: Project) -> dict[str, Any]:
    """The settings of the project's last successful run: what a retrain trains with."""
    last = project.training_runs.filter(status=TrainingRun.Status.SUCCEEDED).order_by("-id").first()
    return {k: v for k, v in (last.config if last else {}).items() if k in CONFIG_FIELDS}
