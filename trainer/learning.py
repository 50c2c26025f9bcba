"""Train a fastai image classifier and score images with it; no Django here."""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback, CancelFitException
from fastai.learner import Recorder, load_learner
from fastai.vision.all import (
    CategoryBlock,
    DataBlock,
    FuncSplitter,
    ImageBlock,
    ItemGetter,
    RandomResizedCrop,
    Resize,
    ResizeMethod,
    accuracy,
    aug_transforms,
    error_rate,
    vision_learner,
)
from torchvision import models
from torchvision.models import get_model_weights

from .artifacts import sha256_file
from .config import (
    ConfigError,
    EpochMetrics,
    ItemScore,
    PretrainedWeights,
    TrainConfig,
    TrainingCancelled,
    TrainingError,
    TrainResult,
)
from .precision import forward, half_is_close

__all__ = [
    "Item",
    "LoupeProgress",
    "cached_weights_path",
    "iter_scores",
    "load_learner_checked",
    "pick_device",
    "score",
    "sha256_file",
    "train",
]

# (path, label, split) with split "train" or "valid", decided by the caller.
Item = tuple[str, str, str]
ProgressFn = Callable[[int, int, dict], None]


def pick_device() -> torch.device:
    """The GPU when there is one; otherwise the CPU, where torch uses every physical core."""
    # Not set_num_threads(cpu_count()): hyperthreads and busy cores make it slower.
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cached_weights_path(architecture: str) -> Path:
    """Where torch.hub keeps this architecture's ImageNet weights on this machine."""
    from .weights import hub_cache_path, spec_for

    return hub_cache_path(spec_for(architecture))


def _resolve_pretrained(
    config: TrainConfig, weights: PretrainedWeights | None = None
) -> tuple[Path | None, str]:
    """The weights file to fine-tune from (None: from scratch) and the note saying which."""
    from .weights import WeightsError, check_hash_prefix, sha256_file, spec_for

    if config.pretrained == "off":
        return None, "trained from scratch (pretrained weights turned off)"
    if weights is None:
        # Nobody resolved them for us: torch.hub's cache is the only place to look.
        path = cached_weights_path(config.architecture)
        if path.exists():
            try:
                check_hash_prefix(spec_for(config.architecture), sha256_file(path))
            except WeightsError as exc:
                weights = PretrainedWeights(None, note=f"{path} is damaged: {exc}")
            else:
                weights = PretrainedWeights(path, note=f"from the torch cache ({path.parent})")
        else:
            weights = PretrainedWeights(
                None, note=f"no {config.architecture} weights in {path.parent}"
            )
    if weights.path is None:
        if config.pretrained == "on":
            raise TrainingError(
                f"Pretrained {config.architecture} weights are required (pretrained 'on') but "
                f"could not be had: {weights.note}. Fetch or import them on the Backbones page "
                "(manage.py weights), or train with pretrained 'auto' or 'off'."
            )
        return None, f"trained from scratch: {weights.note}"
    path = Path(weights.path)
    digest = sha256_file(path)
    if weights.sha256 and digest != weights.sha256:
        raise TrainingError(
            f"Refusing the weights file {path.name}: its sha256 is {digest[:12]}..., not the "
            f"{weights.sha256[:12]}... recorded when it was stored."
        )
    return path, f"fine-tuned from ImageNet weights {path.name} (sha256 {digest})"


def _backbone_meta(architecture: str) -> dict:
    """fastai's model_meta for the architecture; the ones fastai does not list get the cut,
    split and normalisation statistics of their torchvision weights."""
    from fastai.vision.learner import _default_meta, model_meta

    arch = getattr(models, architecture)
    if arch in model_meta:
        return model_meta[arch]
    transforms = get_model_weights(architecture).DEFAULT.transforms()
    return {
        **_default_meta,
        "stats": (list(transforms.mean), list(transforms.std)),
        "weights": "DEFAULT",
    }


class _BackboneFromFile:
    """A torchvision builder that reads its ImageNet weights from a checked file, not the hub."""

    def __init__(self, architecture: str, path: Path | None):
        self.architecture, self.path = architecture, path

    def __call__(self, weights=None, **kwargs):
        from .weights import build_backbone

        return build_backbone(self.architecture, self.path if weights else None)


def _vision_learner(dls, config: TrainConfig, weights_path: Path | None, **kwargs):
    """``vision_learner`` with Loupe's weights file and the architecture's own statistics."""
    from fastai.vision.learner import model_meta

    builder = _BackboneFromFile(config.architecture, weights_path)
    model_meta[builder] = _backbone_meta(config.architecture)
    try:
        learn = vision_learner(dls, builder, pretrained=weights_path is not None, **kwargs)
    finally:
        del model_meta[builder]
    learn.arch = getattr(models, config.architecture)  # what export pickles: not the builder
    return learn


def _is_valid(item: Item) -> bool:
    return item[2] == "valid"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _item_tfms(config: TrainConfig):
    if config.resize_method == "random_resized_crop":
        return RandomResizedCrop(config.image_size, min_scale=config.min_scale)
    method = {
        "crop": ResizeMethod.Crop,
        "pad": ResizeMethod.Pad,
        "squish": ResizeMethod.Squish,
    }[config.resize_method]
    return Resize(config.image_size, method=method, pad_mode="zeros")


def _batch_tfms(config: TrainConfig):
    if not config.augment:
        return None
    return aug_transforms(
        do_flip=config.do_flip,
        flip_vert=config.flip_vert,
        max_rotate=config.max_rotate,
        max_zoom=config.max_zoom,
        max_lighting=config.max_lighting,
        max_warp=config.max_warp,
    )


def _check_items(items: Sequence[Item]) -> tuple[list[str], int, int]:
    if not items:
        raise TrainingError("There are no labeled images to train on.")
    splits = {split for _, _, split in items}
    if not splits <= {"train", "valid"}:
        raise TrainingError(f"Unknown split(s) {sorted(splits - {'train', 'valid'})}.")
    n_valid = sum(1 for item in items if _is_valid(item))
    n_train = len(items) - n_valid
    if n_train == 0 or n_valid == 0:
        raise TrainingError(
            f"Training needs images in both splits (train: {n_train}, valid: {n_valid})."
        )
    vocab = sorted({label for _, label, _ in items})
    if len(vocab) < 2:
        raise TrainingError(f"Training needs at least two classes; found {vocab}.")
    return vocab, n_train, n_valid


def _check_readable(paths: Iterable[str]) -> None:
    """Open every image's header, so a bad file fails the run with its path."""
    from PIL import Image, UnidentifiedImageError

    failures = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018 - reading the header is the check
        except (OSError, UnidentifiedImageError) as exc:
            failures.append(
                f"{path}: {exc.strerror if isinstance(exc, FileNotFoundError) else exc}"
            )
    if failures:
        raise TrainingError(f"{len(failures)} image(s) cannot be read, e.g. {failures[0]}")


def _dataloaders(items: Sequence[Item], config: TrainConfig, vocab, device):
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=vocab)),
        # ItemGetter takes the whole tuple; a plain function would be mapped over it.
        get_x=ItemGetter(0),
        get_y=ItemGetter(1),
        splitter=FuncSplitter(_is_valid),
        item_tfms=_item_tfms(config),
        batch_tfms=_batch_tfms(config),
    )
    # Worker processes cost more than they save on small CPU datasets.
    workers = min(4, os.cpu_count() or 1) if device.type == "cuda" else 0
    # fastai drops the last partial training batch: a batch bigger than the training set
    # would leave no batch at all, and nothing would be learned.
    n_train = sum(1 for item in items if not _is_valid(item))
    bs = max(1, min(config.batch_size, n_train))
    return block.dataloaders(
        list(items), bs=bs, device=device, num_workers=workers, seed=config.seed
    )


class LoupeProgress(Callback):  # not "ProgressCallback": fastai names callbacks by class
    """Reports per batch and per epoch; stops within one batch when asked."""

    order = Recorder.order + 10  # after the Recorder, so an epoch's values are in

    def __init__(self, on_progress: ProgressFn, should_stop: Callable[[], bool], total: int):
        self.on_progress, self.should_stop, self.total = on_progress, should_stop, total
        self.done, self.cancelled, self.phase = 0, False, "frozen"
        self.valid_predicted: list[torch.Tensor] = []
        self.valid_targets: list[torch.Tensor] = []
        self.epoch_metrics: list[EpochMetrics] = []

    def before_fit(self):
        if self.cancelled:
            raise CancelFitException
        self.phase = "frozen" if self.opt.frozen_idx else "unfrozen"

    def before_validate(self):
        self.valid_predicted, self.valid_targets = [], []

    def after_batch(self):
        if not self.training:
            # Kept from each validation pass; the last one is the final model's.
            self.valid_predicted.append(self.learn.pred.detach().argmax(dim=1).cpu())
            self.valid_targets.append(self.learn.yb[0].detach().cpu())
        self.done += 1
        self.on_progress(min(self.done, self.total), self.total, {})
        if self.should_stop():
            self.cancelled = True
            raise CancelFitException

    def after_epoch(self):
        names = self.recorder.metric_names[1:-1]  # without 'epoch' and 'time'
        values = dict(zip(names, self.recorder.values[-1], strict=False))
        metrics = EpochMetrics(
            epoch=len(self.epoch_metrics),
            train_loss=float(values.get("train_loss", float("nan"))),
            valid_loss=float(values.get("valid_loss", float("nan"))),
            error_rate=float(values.get("error_rate", float("nan"))),
            accuracy=float(values.get("accuracy", float("nan"))),
            phase=self.phase,
        )
        self.epoch_metrics.append(metrics)
        self.on_progress(min(self.done, self.total), self.total, {"epoch": metrics.to_dict()})


def _confusion(actual: torch.Tensor, predicted: torch.Tensor, n: int) -> list[list[int]]:
    matrix = torch.zeros((n, n), dtype=torch.long)
    for a, p in zip(actual.tolist(), predicted.tolist(), strict=True):
        matrix[a, p] += 1
    return matrix.tolist()


def _per_class(matrix: list[list[int]], vocab: list[str]) -> list[dict]:
    rows = []
    for i, name in enumerate(vocab):
        tp = matrix[i][i]
        support = sum(matrix[i])
        predicted = sum(row[i] for row in matrix)
        rows.append(
            {
                "name": name,
                "precision": tp / predicted if predicted else None,
                "recall": tp / support if support else None,
                "support": support,
            }
        )
    return rows


def train(
    items: Sequence[Item],
    config: TrainConfig,
    *,
    output_dir: Path,
    on_progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    weights: PretrainedWeights | None = None,
    onnx: bool = True,
) -> TrainResult:
    """Fit ``vision_learner`` + ``fine_tune`` on ``items``; artifacts go to ``output_dir``.

    ``weights``: the ImageNet weights file the caller found (or why none); without it the
    torch hub cache is looked in. ``onnx``: also export the model to ONNX and check its
    answers against fastai's on the validation images (``result.onnx``).
    """
    config.validate()
    started = time.monotonic()
    vocab, n_train, n_valid = _check_items(items)
    _check_readable(path for path, _, _ in items)
    weights_path, pretrained_note = _resolve_pretrained(config, weights)
    pretrained = weights_path is not None
    device = pick_device()
    _seed_everything(config.seed)
    dls = _dataloaders(items, config, vocab, device)

    epochs_total = config.epochs + (config.freeze_epochs if pretrained else 0)
    total = epochs_total * (len(dls.train) + len(dls.valid))
    progress = LoupeProgress(
        on_progress or (lambda *a: None), should_stop or (lambda: False), total
    )
    learn = _vision_learner(
        dls, config, weights_path, metrics=[error_rate, accuracy], cbs=[progress]
    )
    precision = _use_gpu_precision(learn, device)
    learn.path = Path(output_dir)
    with learn.no_bar(), learn.no_logging():
        learning_rate = config.learning_rate
        if learning_rate is None:
            learning_rate = float(learn.lr_find(show_plot=False).valley)
        if pretrained:
            # fine_tune: frozen epochs on the new head, then the whole network.
            learn.fine_tune(
                config.epochs, base_lr=learning_rate, freeze_epochs=config.freeze_epochs
            )
        else:
            # No pretrained body to protect: fit every layer from the start.
            learn.fit_one_cycle(config.epochs, learning_rate)
    if progress.cancelled:
        raise TrainingCancelled("Training was cancelled.")

    # The last epoch's validation pass already predicted every validation image, in eval
    # mode and without augmentation: no second pass for the confusion matrix.
    predicted = torch.cat(progress.valid_predicted)
    targets = torch.cat(progress.valid_targets)
    learn.remove_cb(progress)
    if device.type == "cuda":
        learn.to_contiguous(to_fp32=True)  # the export is served in fp32, on any device
    matrix = _confusion(targets, predicted, len(vocab))
    error = float((predicted != targets).float().mean())

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    export_path = output_dir / "export.pkl"
    weights_path = output_dir / "weights.pth"
    learn.export(export_path)
    torch.save(learn.model.state_dict(), weights_path)
    sha256 = {
        export_path.name: sha256_file(export_path),
        weights_path.name: sha256_file(weights_path),
    }
    exported = None
    if onnx:
        from .onnx_export import OnnxExport, export_onnx

        valid_paths = [path for path, _, split in items if split == "valid"]
        try:
            exported = export_onnx(learn, output_dir, valid_paths, architecture=config.architecture)
        except Exception as exc:  # e.g. no onnxruntime: the version is served by torch
            exported = OnnxExport(error=f"not exported: {type(exc).__name__}: {exc}")
        if exported.path is not None:
            sha256[exported.path.name] = exported.sha256
    config_path = output_dir / "config.json"
    config_path.write_text(
        json.dumps({"config": config.to_dict(), "vocab": vocab, "sha256": sha256}, indent=2)
    )
    return TrainResult(
        export_path=export_path,
        weights_path=weights_path,
        config_path=config_path,
        vocab=list(vocab),
        epochs=progress.epoch_metrics,
        error_rate=error,
        accuracy=1 - error,
        per_class=_per_class(matrix, vocab),
        confusion_matrix=matrix,
        duration_s=time.monotonic() - started,
        pretrained=pretrained,
        pretrained_note=pretrained_note,
        device=str(device),
        learning_rate=learning_rate,
        n_train=n_train,
        n_valid=n_valid,
        sha256=sha256,
        precision=precision,
        onnx=exported,
    )


def _use_gpu_precision(learn, device) -> str:
    """On a GPU, mixed precision and channels_last (tensor cores); on the CPU, plain fp32."""
    if device.type != "cuda":
        return "fp32"
    learn.to_channelslast()  # adds fastai's MixedPrecision (fp16) too
    return "fp16 mixed, channels_last"


def load_learner_checked(export_path: Path, expected_sha256: str | None = None, *, device=None):
    """Load an exported learner, refusing a file whose sha256 is not the one expected."""
    export_path = Path(export_path)
    if expected_sha256 is not None:
        actual = sha256_file(export_path)
        if actual != expected_sha256:
            raise TrainingError(
                f"Refusing to load {export_path.name}: its sha256 is {actual[:12]}..., "
                f"not the {expected_sha256[:12]}... recorded when it was trained."
            )
    device = device or pick_device()
    with warnings.catch_warnings():
        # fastai warns that pickles can run code; the sha256 check above is our answer.
        warnings.filterwarnings("ignore", message="load_learner` uses Python's insecure pickle")
        learn = load_learner(export_path, cpu=device.type == "cpu")
    learn.model.eval()
    return learn


# Items per test DataLoader: building one takes milliseconds, so not one per batch; memory stays
# O(batch_size * _BATCHES_PER_LOADER) however many items come.
_BATCHES_PER_LOADER = 16


def iter_scores(
    export_path: Path,
    items: Iterable[tuple[str, str | None]],
    *,
    expected_sha256: str | None = None,
    batch_size: int = 64,
) -> Iterator[ItemScore]:
    """Score (path, label) pairs batch by batch, without augmentation; memory O(batch)."""
    device = pick_device()
    learn = load_learner_checked(export_path, expected_sha256, device=device)
    vocab = list(learn.dls.vocab)
    index = {name: i for i, name in enumerate(vocab)}
    half: bool | None = None
    pending = iter(items)
    while chunk := list(itertools.islice(pending, batch_size * _BATCHES_PER_LOADER)):
        # test_dl applies the validation transforms only: no augmentation.
        dl = learn.dls.test_dl([path for path, _ in chunk], bs=batch_size, num_workers=0)
        start = 0
        for (xb,) in dl:
            batch = chunk[start : start + len(xb)]
            start += len(batch)
            xb = xb.to(device).as_subclass(torch.Tensor)
            if half is None:  # decided on the first batch: fp16 only where it answers as fp32
                half = half_is_close(learn.model, xb)
            yield from _score_batch(learn.model, xb, batch, index, vocab, half=half)


def _score_batch(model, xb, batch, index, vocab, *, half: bool = False) -> list[ItemScore]:
    targets = [index.get(label, -100) for _, label in batch]
    with torch.inference_mode():
        # A plain tensor: fastai's TensorImage dispatch costs time in every layer and element.
        logits = forward(model, xb.as_subclass(torch.Tensor), half=half)
        probs = torch.softmax(logits, dim=1)
        losses = F.cross_entropy(
            logits,
            torch.tensor(targets, device=logits.device),
            reduction="none",
            ignore_index=-100,
        )
        confidence, predicted = probs.max(dim=1)
    # One copy to Python per batch, not one per element.
    return [
        ItemScore(
            path=path,
            label=label if target >= 0 else None,
            predicted=vocab[p],
            confidence=c,
            loss=loss if target >= 0 else None,
            probabilities=row,
        )
        for (path, label), target, p, c, loss, row in zip(
            batch,
            targets,
            predicted.tolist(),
            confidence.tolist(),
            losses.tolist(),
            probs.tolist(),
            strict=True,
        )
    ]


def score(
    export_path: Path,
    items: Iterable[tuple[str, str | None]],
    *,
    expected_sha256: str | None = None,
    batch_size: int = 64,
) -> list[ItemScore]:
    """Per item loss, predicted class, confidence and probabilities."""
    if isinstance(items, (str, bytes)):
        raise ConfigError("items must be (path, label) pairs")
    return list(
        iter_scores(export_path, items, expected_sha256=expected_sha256, batch_size=batch_size)
    )
