"""Suggestions for unlabeled images, and the orders that ask a labeler first about the images
that teach the model most (active learning). No Django here.

One forward pass per batch gives both the class probabilities and the body's pooled
features; the features, projected to a few dimensions, let the ``diverse`` order spread a
batch over the embedding space instead of offering twenty near-copies of one photo.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_STRATEGY",
    "EMBEDDING_DIM",
    "STRATEGIES",
    "Suggestion",
    "diverse_ranks",
    "iter_suggestions",
    "nearest_cluster",
    "order",
    "ranks_from_clusters",
    "suggestion_stats",
]

# uncertainty: smallest margin first; diverse: the most uncertain of each embedding cluster
# in turn; confident: highest confidence first (fast accept-all passes); random: seeded.
STRATEGIES = ("uncertainty", "diverse", "confident", "random")
# Decided by bench/active_learning.py (digits, 3 seeds, resnet18 from scratch): label savings
# against random 0.43 for uncertainty, 0.37 for diverse (0.26 on one seed), confident never
# reached random's accuracy. Photo sets with near-duplicates may favour diverse: rerun there.
DEFAULT_STRATEGY = "uncertainty"
# A seeded random projection keeps distances roughly (Johnson-Lindenstrauss) in 256 bytes an
# image, where the pooled features of a resnet are 1,024 floats or more.
EMBEDDING_DIM = 64
# The diverse order spreads each window of this many most uncertain images over clusters.
DIVERSE_WINDOW = 100
_BATCHES_PER_LOADER = 16


@dataclass
class Suggestion:
    path: str
    predicted: int  # index into the vocab
    confidence: float
    margin: float  # top probability minus the second
    entropy: float  # of the class probabilities, in nats
    probabilities: list[float]
    embedding: np.ndarray  # float32, EMBEDDING_DIM


def suggestion_stats(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Predicted index, confidence, margin and entropy of each row of ``probs`` (n, classes)."""
    probs = np.asarray(probs, dtype=np.float64)
    top2 = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.hstack([probs * 0, probs])
    margin = top2[:, 1] - top2[:, 0]
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1)
    return probs.argmax(axis=1), probs.max(axis=1), margin, entropy


def _projection(n_features: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_features, EMBEDDING_DIM)) / np.sqrt(EMBEDDING_DIM)).astype(
        np.float32
    )


def iter_suggestions(
    export_path: Path,
    paths: Iterable[str],
    *,
    expected_sha256: str | None = None,
    batch_size: int = 64,
) -> Iterator[Suggestion]:
    """Probabilities and a projected embedding for each image, without augmentation;
    memory O(batch)."""
    import torch

    from .learning import load_learner_checked, pick_device
    from .precision import forward, half_is_close

    device = pick_device()
    learn = load_learner_checked(export_path, expected_sha256, device=device)
    body, head = learn.model[0], learn.model[1]
    projection = None
    half: bool | None = None
    pending = iter(paths)
    while chunk := list(itertools.islice(pending, batch_size * _BATCHES_PER_LOADER)):
        # test_dl: the validation transforms only, as the labeled images are scored.
        dl = learn.dls.test_dl(chunk, bs=batch_size, num_workers=0)
        start = 0
        for (xb,) in dl:
            xb = xb.to(device).as_subclass(torch.Tensor)
            if half is None:
                half = half_is_close(learn.model, xb)
            with torch.inference_mode():
                features = forward(body, xb, half=half)
                probs = torch.softmax(forward(head, features, half=half), dim=1).cpu().numpy()
                pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
                pooled = pooled.cpu().numpy().astype(np.float32)
            if projection is None:
                projection = _projection(pooled.shape[1])
            embedded = pooled @ projection
            predicted, confidence, margin, entropy = suggestion_stats(probs)
            for i in range(len(probs)):
                yield Suggestion(
                    path=chunk[start + i],
                    predicted=int(predicted[i]),
                    confidence=float(confidence[i]),
                    margin=float(margin[i]),
                    entropy=float(entropy[i]),
                    probabilities=probs[i].astype(float).tolist(),
                    embedding=embedded[i],
                )
            start += len(probs)


def _n_clusters(n: int) -> int:
    # About one cluster per 20 images: a batch of 20 then meets ~20 different clusters.
    return int(min(100, max(1, n // 20)))


def diverse_ranks(
    embeddings: np.ndarray, margins: Sequence[float], *, seed: int = 0, n_clusters=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster ids, diverse ranks (0 = ask first) and the cluster centres.

    k-means on the embeddings, then ``ranks_from_clusters``.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    margins = np.asarray(margins, dtype=np.float64)
    n = len(x)
    if n == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros((0, x.shape[1] if x.ndim == 2 else 0))
    k = min(n, n_clusters or _n_clusters(n))
    if k <= 1:
        clusters = np.zeros(n, dtype=int)
        centres = x.mean(axis=0, keepdims=True)
    else:
        from sklearn.cluster import KMeans, MiniBatchKMeans

        kind = KMeans if n <= 20_000 else MiniBatchKMeans
        fitted = kind(n_clusters=k, n_init=3, random_state=seed).fit(x)
        clusters, centres = fitted.labels_.astype(int), fitted.cluster_centers_
    return clusters, ranks_from_clusters(clusters, margins), centres


def ranks_from_clusters(
    clusters: np.ndarray, margins: np.ndarray, *, window: int = DIVERSE_WINDOW
) -> np.ndarray:
    """Uncertainty first, diversity within it: the images sorted by margin are cut into
    windows of ``window``; inside each, the order takes each cluster's most uncertain
    remaining image in turn (as Cluster-Margin sampling does)."""
    clusters = np.asarray(clusters)
    margins = np.asarray(margins, dtype=np.float64)
    n = len(clusters)
    by_margin = np.lexsort((np.arange(n), margins))  # ties by position: deterministic
    ranks = np.empty(n, dtype=np.int64)
    for start in range(0, n, window):
        members = by_margin[start : start + window]
        turn = np.zeros(len(members), dtype=np.int64)  # the image's place in its cluster
        seen: dict[int, int] = {}
        first: dict[int, int] = {}  # the cluster's first appearance: its turn order
        for j, i in enumerate(members):
            c = int(clusters[i])
            turn[j] = seen.get(c, 0)
            seen[c] = turn[j] + 1
            first.setdefault(c, j)
        keys = np.array([first[int(clusters[i])] for i in members])
        ranked = np.lexsort((keys, turn))
        ranks[members[ranked]] = start + np.arange(len(members))
    return ranks


def nearest_cluster(embeddings: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The nearest centre of each embedding: the cluster of an image scored later."""
    x = np.asarray(embeddings, dtype=np.float64)
    c = np.asarray(centres, dtype=np.float64)
    if len(c) == 0:
        return np.zeros(len(x), dtype=int)
    # In chunks: a large upload must not build an (images x centres x dims) array at once.
    out = np.empty(len(x), dtype=int)
    for start in range(0, len(x), 4096):
        part = x[start : start + 4096]
        distances = (part**2).sum(1)[:, None] - 2 * part @ c.T + (c**2).sum(1)[None, :]
        out[start : start + len(part)] = distances.argmin(axis=1)
    return out


def order(
    strategy: str,
    *,
    margins: Sequence[float],
    confidences: Sequence[float],
    embeddings: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Indices in the order ``strategy`` asks about them (the bench's and the queue's)."""
    margins = np.asarray(margins, dtype=np.float64)
    n = len(margins)
    idx = np.arange(n)
    if strategy == "uncertainty":
        return np.lexsort((idx, margins))
    if strategy == "confident":
        return np.lexsort((idx, -np.asarray(confidences, dtype=np.float64)))
    if strategy == "random":
        return np.random.default_rng(seed).permutation(n)
    if strategy == "diverse":
        if embeddings is None:
            raise ValueError("the diverse strategy needs embeddings")
        _, ranks, _ = diverse_ranks(embeddings, margins, seed=seed)
        return np.argsort(ranks, kind="stable")
    raise ValueError(f"Unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}.")
