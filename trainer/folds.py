"""Out-of-fold scoring: every image scored by a model that never saw it. No Django here.

Full mode trains one ``train()`` model per fold on the other folds; fast mode fits a small
linear head per fold on embeddings from an existing model's body.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .config import ItemScore, PretrainedWeights, TrainConfig, TrainingError
from .learning import iter_scores, load_learner_checked, pick_device, train

__all__ = ["assign_folds", "embed", "fit_linear_folds", "train_fold"]

ProgressFn = Callable[[int, int, dict], None]
# Items per test DataLoader while embedding, as iter_scores does: memory O(batch).
_BATCHES_PER_LOADER = 16
# Fast mode's C (inverse L2 strength), by inner cross-validation: decades keep it to ~20 fits.
_C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
_INNER_FOLDS = 3
_FALLBACK_C = 0.1


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
    weights: PretrainedWeights | None = None,
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
            split,
            config,
            output_dir=output_dir,
            on_progress=on_progress,
            should_stop=should_stop,
            weights=weights,
            onnx=False,  # a fold's model is never served
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
    c: float | None = None,
    max_iter: int = 1000,
) -> np.ndarray:
    """Out-of-fold probabilities (n, n_classes) from a logistic-regression head per fold.

    Each fold's features are standardised on its training rows only; ``c`` None picks the
    inverse regularisation by cross-validated log loss on those rows, so the probabilities
    are calibrated rather than over-confident. With ``only_fold``, only that fold's rows are
    filled (the rest stay NaN), so each fold can be fitted by its own job.
    """
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
        x_fit, x_test = _standardised(x[fit], x[test])
        chosen = _pick_c(x_fit, y[fit], max_iter) if c is None else c
        model = _converged_head(x_fit, y[fit], chosen, max_iter)
        fold_probs = np.zeros((int(test.sum()), n_classes))
        fold_probs[:, model.classes_] = model.predict_proba(x_test)
        probs[test] = fold_probs
    return probs


def _standardised(x_fit: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both scaled by the training rows' mean and spread; held-out rows clipped to their range."""
    mean = x_fit.mean(axis=0)
    std = x_fit.std(axis=0)
    std = np.where(std > 1e-12 * (np.abs(mean) + 1.0), std, 1.0)  # constant: stays 0
    scaled_fit = (x_fit - mean) / std
    # Else a ReLU feature nearly always 0 in training puts a held-out row 1,000s of sd out.
    scaled_test = np.clip((x_test - mean) / std, scaled_fit.min(axis=0), scaled_fit.max(axis=0))
    return scaled_fit, scaled_test


def _fit_head(x, y, c: float, max_iter: int, start=None):
    """A logistic-regression head, and whether lbfgs converged (warm from ``start``)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=max_iter, warm_start=start is not None)
    if start is not None:
        model.coef_, model.intercept_ = start.coef_.copy(), start.intercept_.copy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return model, converged


def _converged_head(x, y, c: float, max_iter: int):
    """The head at ``c``, or at the first tenfold stronger regularisation that converges."""
    for _ in range(8):
        model, converged = _fit_head(x, y, c, max_iter)
        if converged:
            return model
        c /= 10
    return model


def _held_out_log_loss(model, x, y) -> float:
    # A class absent from the inner training rows gets no column: the worst loss.
    column = {int(label): i for i, label in enumerate(model.classes_)}
    p = model.predict_proba(x)
    given = np.array(
        [p[row, column[label]] if label in column else 0.0 for row, label in enumerate(y)]
    )
    return float(-np.log(np.clip(given, 1e-12, 1.0)).sum())


def _pick_c(x, y, max_iter: int) -> float:
    """The grid's C with the lowest held-out log loss over inner stratified folds.

    C rises from the strongest regularisation, each fit warm-started from the last; it stops
    once the loss stops falling or a fit fails to converge (larger C converge slower still).
    """
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(y)[np.unique(y)].min())
    inner = min(_INNER_FOLDS, smallest)
    if inner < 2:
        return _FALLBACK_C  # too few images of a class to hold any out
    splits = list(StratifiedKFold(inner, shuffle=True, random_state=0).split(x, y))
    models = [None] * len(splits)
    best_c, best_loss = _C_GRID[0], np.inf
    for c in _C_GRID:
        total = 0.0
        for s, (train_rows, test_rows) in enumerate(splits):
            models[s], converged = _fit_head(x[train_rows], y[train_rows], c, max_iter, models[s])
            if not converged:
                return best_c
            total += _held_out_log_loss(models[s], x[test_rows], y[test_rows])
        if total >= best_loss:
            break
        best_c, best_loss = c, total
    return best_c
