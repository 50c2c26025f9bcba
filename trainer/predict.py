"""Batched inference with an exported learner; no Django here.

``Predictor.load(export_path, expected_sha256)`` checks the artifact's sha256 before it
unpickles anything, then ``predict(images)`` runs the whole list through the model as one
batch under ``torch.inference_mode()``, with the transforms ``learn.dls.test_dl`` applies.
Both run on the process's one inference thread (``on_inference_thread``); images that other
threads ask the same Predictor for while it is busy go through together, in one batch.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image as PILImage

from .config import TrainingError
from .learning import load_learner_checked, pick_device, sha256_file
from .precision import forward, half_is_close

__all__ = ["ArtifactMismatch", "ImagePrediction", "Predictor", "on_inference_thread"]

T = TypeVar("T")

# On the CPU each thread that runs torch gets its own OpenMP team of threads. Once a process
# has more of those than cores (a second team: a gthread worker's other request thread, the
# thread answering shadow copies), libgomp cuts its spin-wait between parallel regions to
# almost nothing, and every layer pays for waking its team: under gunicorn, single-image
# requests went from p50 16.7 ms to 22.6 ms for the rest of the process's life once a second
# thread had run a model (bench/inference.py). So a process runs every model call on one
# thread.
_inference: dict[str, ThreadPoolExecutor | None] = {"executor": None}
_inference_lock = threading.Lock()
_on_inference_thread = threading.local()


def _forget_the_parents_thread() -> None:
    """In a forked child (a Celery or gunicorn worker): none of the parent's threads came
    along, and a lock another thread held at the fork would never be released."""
    global _inference_lock
    _inference_lock = threading.Lock()
    _inference["executor"] = None


os.register_at_fork(after_in_child=_forget_the_parents_thread)


def _mark_inference_thread() -> None:
    _on_inference_thread.yes = True


def _is_inference_thread() -> bool:
    return getattr(_on_inference_thread, "yes", False)


def _inference_executor() -> ThreadPoolExecutor:
    with _inference_lock:
        if _inference["executor"] is None:
            _inference["executor"] = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="loupe-inference",
                initializer=_mark_inference_thread,
            )
        return _inference["executor"]


def on_inference_thread(fn: Callable[..., T], /, *args, **kwargs) -> T:
    """Call ``fn(*args, **kwargs)`` on this process's inference thread and return its result.

    Calls from other threads wait their turn, one at a time; a call made on the inference
    thread itself runs at once. Exceptions reach the caller as they were raised.
    """
    if _is_inference_thread():
        return fn(*args, **kwargs)
    return _inference_executor().submit(fn, *args, **kwargs).result()


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


class _Waiting:
    """One caller's images, waiting for a batch; the inference thread fills in the answer."""

    def __init__(self, images: list):
        self.images = images
        self.answers: list[ImagePrediction] | None = None
        self.error: BaseException | None = None
        self.answered = threading.Event()


class Predictor:
    """A loaded model for one version; cache it per process, never per request."""

    # Callers' images join one batch up to this many; one caller's larger list runs alone.
    COALESCE_IMAGES = 64

    def __init__(self, learn, *, device: torch.device, sha256: str, path: Path):
        self.learn, self.device, self.sha256, self.path = learn, device, sha256, path
        self.vocab: list[str] = [str(name) for name in learn.dls.vocab]
        self.model = learn.model.to(device).eval()
        self.half: bool | None = None  # fp16 on a GPU if the first batch answers as fp32
        self._waiting: deque[_Waiting] = deque()
        self._waiting_lock = threading.Lock()
        self._answering = False  # a call to _answer_waiting is queued or running

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
        """One batch through the model for all ``images`` (paths, PIL images or bytes).

        Images other threads asked for in the meantime join the batch (up to
        COALESCE_IMAGES): a gthread worker's concurrent single-image requests cost one
        forward pass, not one each. Nothing waits for company; only the images that queued
        while the model was busy go together.
        """
        images = list(images)
        if not images:
            return []
        if _is_inference_thread():
            return self._predict(images)
        waiting = _Waiting(images)
        with self._waiting_lock:
            self._waiting.append(waiting)
            schedule, self._answering = not self._answering, True
        if schedule:
            try:
                _inference_executor().submit(self._answer_waiting)
            except RuntimeError:  # the interpreter is shutting down
                with self._waiting_lock:
                    self._waiting.remove(waiting)
                    self._answering = False
                raise
        waiting.answered.wait()
        if waiting.error is not None:
            raise waiting.error
        return waiting.answers

    def _answer_waiting(self) -> None:
        """On the inference thread: answer the callers waiting now, in one batch.

        Callers wait for their own answer, not for this call: one queued call serves all
        of them, and queues itself again while callers remain, behind the other models'.
        """
        batch, count = [], 0
        with self._waiting_lock:
            while self._waiting and (
                not batch or count + len(self._waiting[0].images) <= self.COALESCE_IMAGES
            ):
                batch.append(self._waiting.popleft())
                count += len(batch[-1].images)
        try:
            self._answer(batch)
        finally:  # never leave a caller waiting for an answer that cannot come
            for waiting in batch:
                if waiting.answers is None and waiting.error is None:
                    waiting.error = TrainingError("The model stopped before it answered.")
                waiting.answered.set()
            with self._waiting_lock:
                again = self._answering = bool(self._waiting)
            if again:
                _inference_executor().submit(self._answer_waiting)

    def _answer(self, batch: list[_Waiting]) -> None:
        if not batch:
            return
        try:
            answers = self._predict([image for waiting in batch for image in waiting.images])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            # One caller's bad image must not fail the others' answers: each on its own.
            for waiting in batch:
                try:
                    waiting.answers = self._predict(waiting.images)
                except Exception as own:
                    waiting.error = own
            return
        start = 0
        for waiting in batch:
            waiting.answers = answers[start : start + len(waiting.images)]
            start += len(waiting.images)

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
