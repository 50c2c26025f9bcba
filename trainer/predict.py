"""Batched inference with an exported learner; no Django here.

``Predictor.load(export_path, expected_sha256)`` checks the artifact's sha256 before it
unpickles anything, then ``predict(images)`` runs the whole list through the model as one
batch under ``torch.inference_mode()``, with the transforms ``learn.dls.test_dl`` applies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from .config import TrainingError
from .learning import load_learner_checked, pick_device, sha256_file

__all__ = ["ArtifactMismatch", "ImagePrediction", "Predictor"]


class ArtifactMismatch(TrainingError):
    """The artifact on disk is not the file the database recorded; it was not unpickled."""

    def __init__(self, path: Path, expected: str, actual: str):
        self.path, self.expected, self.actual = Path(path), expected, actual
        super().__init__(
            f"Refusing to load {self.path}: its sha256 is {actual}, but the database recorded "
            f"{expected} when it was trained. The file was changed or replaced; it was not "
            "unpickled."
        )


@dataclass
class ImagePrediction:
    label: str
    confidence: float  # the top class's probability (max-softmax)
    probabilities: list[float]  # in vocab order
    energy: float  # -logsumexp(logits): higher means less like the training data
    index: int = field(default=0)  # the label's position in the vocab

    @property
    def max_softmax(self) -> float:
        return self.confidence


def _as_item(image):
    """What fastai's PILImage.create takes: a path, a PIL image, or the file's bytes."""
    if isinstance(image, (bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, PILImage.Image):
        # fastai wraps a PIL image without copying its pixels, which fails for a lazily
        # opened file; an array is copied.
        return np.asarray(image.convert("RGB"))
    return image


class Predictor:
    """A loaded model for one version; cache it per process, never per request."""

    def __init__(self, learn, *, device: torch.device, sha256: str, path: Path):
        self.learn, self.device, self.sha256, self.path = learn, device, sha256, path
        self.vocab: list[str] = [str(name) for name in learn.dls.vocab]
        self.model = learn.model.to(device).eval()

    @classmethod
    def load(
        cls, export_path: Path | str, expected_sha256: str, device: torch.device | None = None
    ) -> Predictor:
        """Load ``export_path``; raise ArtifactMismatch before unpickling a foreign file."""
        export_path = Path(export_path)
        if not expected_sha256:
            raise TrainingError(f"Refusing to load {export_path}: no sha256 was recorded for it.")
        try:
            actual = sha256_file(export_path)
        except FileNotFoundError:
            raise TrainingError(f"The model file {export_path} does not exist.") from None
        if actual != expected_sha256:
            raise ArtifactMismatch(export_path, expected_sha256, actual)
        device = device or pick_device()
        # The hash was checked just above; no second read inside load_learner_checked.
        learn = load_learner_checked(export_path, None, device=device)
        return cls(learn, device=device, sha256=actual, path=export_path)

    def predict(self, images: Sequence) -> list[ImagePrediction]:
        """One batch through the model for all ``images`` (paths, PIL images or bytes)."""
        images = list(images)
        if not images:
            return []
        # test_dl applies the validation transforms (resize, to tensor, normalize), as
        # learn.predict does, so probabilities match it.
        dl = self.learn.dls.test_dl([_as_item(i) for i in images], bs=len(images), num_workers=0)
        (xb,) = dl.one_batch()
        with torch.inference_mode():
            # A plain tensor: fastai's TensorImage dispatch costs time in every layer.
            logits = self.model(xb.to(self.device).as_subclass(torch.Tensor)).float()
            probs = torch.softmax(logits, dim=1)
            energy = -torch.logsumexp(logits, dim=1)
            confidence, predicted = probs.max(dim=1)
        return [
            ImagePrediction(
                label=self.vocab[p],
                confidence=c,
                probabilities=row,
                energy=e if math.isfinite(e) else 0.0,
                index=p,
            )
            for p, c, row, e in zip(
                predicted.tolist(),
                confidence.tolist(),
                probs.tolist(),
                energy.tolist(),
                strict=True,
            )
        ]
