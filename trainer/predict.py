"""Batched inference with an exported fastai learner; no Django here.

``Predictor.load(export_path, expected_sha256)`` checks the artifact's sha256 before it
unpickles anything, then ``predict(images)`` runs the whole list through the model as one
batch under ``torch.inference_mode()``, with the transforms ``learn.dls.test_dl`` applies.
Both run on the process's one inference thread (``trainer.inference``); images that other
threads ask the same Predictor for while it is busy go through together, in one batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from .artifacts import ArtifactMismatch, check_artifact
from .inference import BatchingPredictor, ImagePrediction, answers_from_logits, on_inference_thread
from .learning import load_learner_checked, pick_device
from .precision import forward, half_is_close

__all__ = ["ArtifactMismatch", "ImagePrediction", "Predictor", "on_inference_thread"]


def _as_item(image):
    """What fastai's PILImage.create takes: a path, a PIL image, or the file's bytes."""
    if isinstance(image, (bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, PILImage.Image):
        # fastai wraps a PIL image without copying its pixels, which fails for a lazily
        # opened file; an array is copied.
        return np.asarray(image.convert("RGB"))
    return image


class Predictor(BatchingPredictor):
    """A loaded fastai model for one version; cache it per process, never per request."""

    runtime = "torch"

    def __init__(self, learn, *, device: torch.device, sha256: str, path: Path):
        super().__init__()
        self.learn, self.device, self.sha256, self.path = learn, device, sha256, path
        self.vocab = [str(name) for name in learn.dls.vocab]
        self.model = learn.model.to(device).eval()
        self.half: bool | None = None  # fp16 on a GPU if the first batch answers as fp32

    @classmethod
    def load(
        cls, export_path: Path | str, expected_sha256: str, device: torch.device | None = None
    ) -> Predictor:
        """Load ``export_path``; raise ArtifactMismatch before unpickling a foreign file."""
        return on_inference_thread(cls._load, Path(export_path), expected_sha256, device)

    @classmethod
    def _load(
        cls, export_path: Path, expected_sha256: str, device: torch.device | None
    ) -> Predictor:
        actual = check_artifact(export_path, expected_sha256)
        device = device or pick_device()
        # The hash was checked just above; no second read inside load_learner_checked.
        learn = load_learner_checked(export_path, None, device=device)
        return cls(learn, device=device, sha256=actual, path=export_path)

    def _predict(self, images: list) -> list[ImagePrediction]:
        # test_dl applies the validation transforms (resize, to tensor, normalize), as
        # learn.predict does, so probabilities match it.
        dl = self.learn.dls.test_dl([_as_item(i) for i in images], bs=len(images), num_workers=0)
        (xb,) = dl.one_batch()
        xb = xb.to(self.device).as_subclass(torch.Tensor)
        if self.half is None:
            self.half = half_is_close(self.model, xb)
        with torch.inference_mode():
            # A plain tensor: fastai's TensorImage dispatch costs time in every layer.
            logits = forward(self.model, xb, half=self.half)
        return answers_from_logits(logits.cpu().numpy(), self.vocab)
