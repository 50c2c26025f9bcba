"""How far to trust a label ranking: the model's accuracy against chance, and a range of issues.

A ranking of suspicious labels is only as good as the model behind it: a model near chance
cannot tell a wrong label from its own mistake. Plain numpy; no torch, no Django.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .ranking import confident_learning, normalized_margin

__all__ = [
    "CHANCE_BASIS",
    "CLEAR_MARGIN",
    "WEAK_RATIO",
    "WEAK_RECALL",
    "Trust",
    "issue_range",
    "out_of_fold_trust",
    "version_trust",
]

# Weak: accuracy under 1.5x chance, or some class recalled under 0.3 of the time.
WEAK_RATIO = 1.5
WEAK_RECALL = 0.3
# Out-of-fold accuracy this far below the version's own: the fold models are the weak link.
VERSION_GAP = 0.15
# A label counts towards the low end when another class is at least this much more probable.
CLEAR_MARGIN = 0.5
CHANCE_BASIS = "the largest class's share, what always guessing it scores"


@dataclass
class Trust:
    """A model's accuracy against chance, its weak classes, and what would help."""

    accuracy: float
    chance_accuracy: float
    ratio_to_chance: float
    version_accuracy: float | None
    per_class_recall: dict[str, float | None]
    weak_classes: list[str]
    weak: bool
    reasons: list[str]
    suggestions: list[str]
    warning: str
    chance_basis: str = CHANCE_BASIS
    issues_low: int | None = None
    issues_high: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def issue_range(probs, labels) -> tuple[int, int]:
    """(low, high) bounds on the number of wrong labels, from out-of-fold probabilities.

    Low: labels whose probabilities favour another class by at least ``CLEAR_MARGIN``, which
    calibrated uncertainty alone rarely gives; high: every out-of-fold disagreement (or
    confident learning's estimate, if larger), which blames the label for each model error.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels):
        return 0, 0
    low = int((normalized_margin(probs, labels) <= -CLEAR_MARGIN).sum())
    disagreements = int((probs.argmax(axis=1) != labels).sum())
    high = max(disagreements, confident_learning(probs, labels).estimated_issues, low)
    return low, high


def out_of_fold_trust(
    labels,
    probs,
    *,
    class_names: Sequence[str] | None = None,
    version_accuracy: float | None = None,
    fast: bool = False,
    pretrained: bool | None = None,
    epochs: int | None = None,
    image_size: int | None = None,
) -> Trust:
    """The trust of an audit's out-of-fold probabilities (n, K) for labels (n,) in [0, K)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = probs.shape[1]
    names = list(class_names or [str(j) for j in range(n_classes)])
    predicted = probs.argmax(axis=1)
    support = np.bincount(labels, minlength=n_classes)
    hits = np.bincount(labels[predicted == labels], minlength=n_classes)
    recall = {
        name: (float(hits[j] / support[j]) if support[j] else None) for j, name in enumerate(names)
    }
    accuracy = float((predicted == labels).mean()) if len(labels) else 0.0
    chance = float(support.max() / support.sum()) if support.sum() else 1.0 / n_classes
    trust = _judge(
        accuracy,
        chance,
        recall,
        subject="out-of-fold",
        version_accuracy=version_accuracy,
        fast=fast,
        pretrained=pretrained,
        epochs=epochs,
        image_size=image_size,
    )
    trust.issues_low, trust.issues_high = issue_range(probs, labels)
    return trust


def version_trust(
    accuracy: float | None,
    per_class: Sequence[dict] | None,
    *,
    n_classes: int | None = None,
    pretrained: bool | None = None,
    epochs: int | None = None,
    image_size: int | None = None,
) -> Trust | None:
    """The trust of a trained version's validation metrics (``TrainResult.per_class`` rows).

    None when the version has no accuracy to judge.
    """
    if accuracy is None:
        return None
    rows = list(per_class or [])
    supports = [row.get("support") or 0 for row in rows]
    if sum(supports):
        chance = max(supports) / sum(supports)
    else:  # no per-class counts saved: assume balanced classes
        chance = 1.0 / max(n_classes or len(rows) or 2, 1)
    recall = {str(row.get("name")): row.get("recall") for row in rows}
    return _judge(
        float(accuracy),
        float(chance),
        recall,
        subject="validation",
        pretrained=pretrained,
        epochs=epochs,
        image_size=image_size,
    )


def _judge(
    accuracy: float,
    chance: float,
    recall: dict[str, float | None],
    *,
    subject: str,
    version_accuracy: float | None = None,
    fast: bool = False,
    pretrained: bool | None = None,
    epochs: int | None = None,
    image_size: int | None = None,
) -> Trust:
    # Over 2/3 in one class puts 1.5x chance out of reach: then ask for half way to perfect.
    needed = min(WEAK_RATIO * chance, (1.0 + chance) / 2)
    weak_classes = [name for name, r in recall.items() if r is not None and r < WEAK_RECALL]
    reasons = []
    if accuracy < needed:
        reasons.append(
            f"{subject} accuracy {accuracy:.2f} is under {needed:.2f} "
            f"({accuracy / chance:.1f}x chance, {chance:.2f})"
        )
    if weak_classes:
        reasons.append(
            f"recall under {WEAK_RECALL:.1f} for {', '.join(weak_classes)}: "
            "the model rarely recognises them"
        )
    weak = bool(reasons)
    suggestions = []
    notes = []
    if weak:
        if pretrained is not True:
            suggestions.append(
                "Train with pretrained weights: a body trained from scratch on a few hundred "
                "photos rarely learns features that tell the classes apart."
            )
        suggestions.append(f"Train for more epochs{f' (this model: {epochs})' if epochs else ''}.")
        suggestions.append(
            f"Use a larger image size{f' (this model: {image_size} px)' if image_size else ''}."
        )
        if weak_classes:
            suggestions.append(f"Label more images of {', '.join(weak_classes)}.")
    if version_accuracy is not None and accuracy < version_accuracy - VERSION_GAP:
        notes.append(
            f"The version itself reaches {version_accuracy:.2f} on its validation images, "
            f"well above the {accuracy:.2f} out-of-fold."
        )
        if fast:
            suggestions.append(
                "A full audit (one model trained per fold) may rank better than these linear heads."
            )
    warning = ""
    if weak:
        warning = (
            f"Weak model: {'; '.join(reasons)}. It cannot tell a wrong label from its own "
            "mistake, so its order is little better than random"
            + (
                ", and the number of issues is a wide range, not an estimate of wrong labels."
                if subject == "out-of-fold"
                else "."
            )
        )
    return Trust(
        accuracy=accuracy,
        chance_accuracy=chance,
        ratio_to_chance=accuracy / chance,
        version_accuracy=version_accuracy,
        per_class_recall=recall,
        weak_classes=weak_classes,
        weak=weak,
        reasons=reasons,
        suggestions=suggestions,
        warning=warning,
        notes=notes,
    )
