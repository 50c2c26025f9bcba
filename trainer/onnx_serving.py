"""Serve an ONNX export with ONNX Runtime: no torch, no fastai, nothing unpickled.

``OnnxPredictor.load(onnx_path, expected_sha256, spec)`` reads the file once, checks its
sha256 against the recorded one and only then hands those same bytes to ONNX Runtime (so
the file cannot change between the check and the load). ``predict(images)`` builds the
batch with ``trainer.preprocess`` and answers like ``trainer.Predictor``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .artifacts import ArtifactMismatch
from .config import TrainingError
from .inference import BatchingPredictor, ImagePrediction, answers_from_logits, on_inference_thread
from .preprocess import preprocess, spec_check

__all__ = ["OnnxPredictor", "onnx_providers"]


def onnx_providers() -> list[str]:
    """CUDA when this onnxruntime build and machine have it, always the CPU after it."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    wanted = ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []
    return [*wanted, "CPUExecutionProvider"]


class OnnxPredictor(BatchingPredictor):
    """An ONNX Runtime session for one version, with its preprocessing spec."""

    runtime = "onnxruntime"

    def __init__(self, session, spec: dict, *, sha256: str, path: Path):
        super().__init__()
        self.session, self.spec, self.sha256, self.path = session, spec, sha256, path
        self.vocab = list(spec["classes"])
        self.input, self.output = spec["input"], spec["output"]
        self.providers = list(session.get_providers())

    @classmethod
    def load(
        cls, onnx_path: Path | str, expected_sha256: str, spec: dict, *, providers=None
    ) -> OnnxPredictor:
        """Load ``onnx_path``; raise ArtifactMismatch before ONNX Runtime sees another file."""
        return on_inference_thread(cls._load, Path(onnx_path), expected_sha256, spec, providers)

    @classmethod
    def _load(cls, path: Path, expected_sha256: str, spec: dict, providers) -> OnnxPredictor:
        import onnxruntime

        spec_check(spec)
        if not expected_sha256:
            raise TrainingError(f"Refusing to load {path}: no sha256 was recorded for it.")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise TrainingError(f"The model file {path} does not exist.") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise ArtifactMismatch(path, expected_sha256, actual, loaded_as="given to ONNX Runtime")
        try:
            session = onnxruntime.InferenceSession(data, providers=providers or onnx_providers())
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise TrainingError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        return cls(session, spec, sha256=actual, path=path)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's logits for a preprocessed float32 NCHW batch."""
        (logits,) = self.session.run([self.output], {self.input: batch})
        return logits

    def _predict(self, images: list) -> list[ImagePrediction]:
        return answers_from_logits(self.run(preprocess(images, self.spec)), self.vocab)

    def predict_preprocessed(self, batch: np.ndarray) -> list[ImagePrediction]:
        """Answers for a batch already built by ``preprocess`` (benches compare runtimes)."""
        return on_inference_thread(lambda: answers_from_logits(self.run(batch), self.vocab))
