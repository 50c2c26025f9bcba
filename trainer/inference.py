"""Answering images one batch at a time on the process's inference thread; no torch here.

Both runtimes share it: ``trainer.predict.Predictor`` (torch, from fastai's export) and
``trainer.onnx_serving.OnnxPredictor`` (ONNX Runtime, for web processes that must not
import fastai). A subclass says how one list of images becomes answers (``_predict``);
this module batches the callers of other threads together and runs every model call on one
thread.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from .config import TrainingError

__all__ = ["BatchingPredictor", "ImagePrediction", "answers_from_logits", "on_inference_thread"]

T = TypeVar("T")

# On the CPU each thread that runs torch gets its own OpenMP team of threads. Once a process
# has more of those than cores (a second team: a gthread worker's other request thread, the
# thread answering shadow copies), libgomp cuts its spin-wait between parallel regions to
# almost nothing, and every layer pays for waking its team: under gunicorn, single-image
# requests went from p50 16.7 ms to 22.6 ms for the rest of the process's life once a second
# thread had run a model (bench/inference.py). So a process runs every model call on one
# thread; ONNX Runtime's own thread pool is fed from the same one.
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


def answers_from_logits(logits: np.ndarray, vocab: Sequence[str]) -> list[ImagePrediction]:
    """Softmax, top class and energy of a batch of logits (N, classes), computed in float64
    so the probabilities do not depend on the runtime's last bits."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=1, keepdims=True)
    exp = np.exp(z - top)
    total = exp.sum(axis=1, keepdims=True)
    probs = exp / total
    energy = -(top[:, 0] + np.log(total[:, 0]))
    predicted = probs.argmax(axis=1)
    return [
        ImagePrediction(
            label=vocab[p],
            confidence=float(row[p]),
            probabilities=row.tolist(),
            energy=float(e) if math.isfinite(e) else 0.0,
            index=int(p),
        )
        for p, row, e in zip(predicted.tolist(), probs, energy.tolist(), strict=True)
    ]


class _Waiting:
    """One caller's images, waiting for a batch; the inference thread fills in the answer."""

    def __init__(self, images: list):
        self.images = images
        self.answers: list[ImagePrediction] | None = None
        self.error: BaseException | None = None
        self.answered = threading.Event()


class BatchingPredictor:
    """A loaded model that answers every caller on the inference thread, in shared batches.

    Subclasses set ``runtime`` and ``vocab`` and implement ``_predict(images)`` for one list.
    """

    runtime = ""
    # Callers' images join one batch up to this many; one caller's larger list runs alone.
    COALESCE_IMAGES = 64

    def __init__(self) -> None:
        self.vocab: list[str] = []
        self._waiting: deque[_Waiting] = deque()
        self._waiting_lock = threading.Lock()
        self._answering = False  # a call to _answer_waiting is queued or running

    def _predict(self, images: list) -> list[ImagePrediction]:
        raise NotImplementedError

    def warm(self) -> None:
        """Answer one blank image, so the first real request finds every buffer allocated."""
        from PIL import Image as PILImage

        self.predict([PILImage.new("RGB", (64, 64))])

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
