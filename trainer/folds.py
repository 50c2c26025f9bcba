"""Out-of-fold scoring: every image scored by a model that never saw it. No Django here.

Full mode trains one ``train()`` model per fold on the other folds; fast mode fits a small
linear head per fold on embeddings from an existing model's body.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .config import ItemScore, TrainConfig, TrainingError
from .learning import iter_scores, load_learner_checked, pick_device, train

__all__ = ["assign_folds", "embed", "fit_linear_folds", "train_fold"]

ProgressFn = Callable[[int, int, dict], None]
# Items per test DataLoader while embedding, as iter_scores does: memory O(batch).
_BATCHES_PER_LOADER = 16


def _order_key(seed: int, key: str) -> bytes:
    return hashlib.sha256(f"{seed}:{key}".encode()).digest()


def assign_folds(keys: Sequence[str], labels: Sequence[str], k: int, seed: int) -> list[int]:
    """A fold in [0, k) for each item: stratified by label, deterministic, balanced.

    Each class's items are shuffled by a hash of (seed, key) and dealt round-robin, the
    deal continuing across classes, so the fold sizes differ by at most one. The same
    keys give the same folds whatever their order in the input.
    """
    if k < 2:
        raise ValueError("k must be at least 2")
    if len(keys) != len(labels):
        raise ValueError("keys and labels must have the same length")
    if len(set(keys)) != len(keys):
        raise ValueError("keys must be unique")
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    folds = [0] * len(keys)
    dealt = 0
    for label in sorted(by_label):
        members = sorted(by_label[label], key=lambda i: _order_key(seed, str(keys[i])))
        for i in members:
            folds[i] = dealt % k
            dealt += 1
    return folds


def train_fold(
    items: Sequence[tuple[str, str]],
    folds: Sequence[int],
    fold: int,
    config: TrainConfig,
    *,
    output_dir: Path,
    on_progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    keep_model: bool = False,
) -> tuple[list[int], list[ItemScore]]:
    """Train on every fold but ``fold``; score ``fold``'s items without augmentation.

    The held-out fold is the validation split, which fastai never fits on. Returns the
    held-out indices into ``items`` and their scores, in the same order.
    """
    held_out = [i for i, f in enumerate(folds) if f == fold]
    if not held_out:
        raise TrainingError(f"Fold {fold} holds no images.")
    split = [
        (path, label, "valid" if f == fold else "train")
        for (path, label), f in zip(items, folds, strict=True)
    ]
    output_dir = Path(output_dir)
    try:
        result = train(
            split, config, output_dir=output_dir, on_progress=on_progress, should_stop=should_stop
        )
        scores = list(
            iter_scores(
                result.export_path,
                (items[i] for i in held_out),
                expected_sha256=result.sha256[result.export_path.name],
                batch_size=config.batch_size if config.batch_size >= 16 else 64,
            )
        )
    finally:
        if not keep_model:
            shutil.rmtree(output_dir, ignore_errors=True)
    return held_out, scores


def embed(
    export_path: Path,
    expected_sha256: str | None,
    paths: Sequence[str],
    *,
    batch_size: int = 64,
) -> np.ndarray:
    """The model body's pooled features (average and max, as fastai's head pools), (n, d)."""
    device = pick_device()
    learn = load_learner_checked(export_path, expected_sha256, device=device)
    body = learn.model[0]
    out: list[np.ndarray] = []
    pending = iter(paths)
    while chunk := list(itertools.islice(pending, batch_size * _BATCHES_PER_LOADER)):
        # test_dl: the validation transforms only, no augmentation.
        dl = learn.dls.test_dl(list(chunk), bs=batch_size, num_workers=0)
        for (xb,) in dl:
            with torch.inference_mode():
                features = body(xb.to(device).as_subclass(torch.Tensor)).float()
                pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
            out.append(pooled.cpu().numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def fit_linear_folds(
    embeddings: np.ndarray,
    labels: Sequence[int],
    folds: Sequence[int],
    n_classes: int,
    *,
    only_fold: int | None = None,
    c: float = 0.5,
    max_iter: int = 300,
) -> np.ndarray:
    """Out-of-fold probabilities (n, n_classes) from a logistic-regression head per fold.

    With ``only_fold``, only that fold's rows are filled (the rest stay NaN), so each fold
    can be fitted by its own job.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    folds_arr = np.asarray(folds, dtype=np.int64)
    probs = np.full((len(y), n_classes), np.nan)
    wanted = sorted(set(folds_arr.tolist())) if only_fold is None else [only_fold]
    for fold in wanted:
        test = folds_arr == fold
        fit = ~test
        if not test.any():
            continue
        classes = np.unique(y[fit])
        if len(classes) < 2:
            # Nothing to tell apart: the prior of the one class seen.
            probs[test] = 0.0
            if len(classes):
                probs[test, classes[0]] = 1.0
            continue
        mean = x[fit].mean(axis=0)
        std = x[fit].std(axis=0) + 1e-6
        model = LogisticRegression(C=c, max_iter=max_iter)
        model.fit((x[fit] - mean) / std, y[fit])
        fold_probs = np.zeros((int(test.sum()), n_classes))
        fold_probs[:, model.classes_] = model.predict_proba((x[test] - mean) / std)
        probs[test] = fold_probs
    return probs
