"""Export a fastai learner's model to ONNX with its preprocessing spec, and prove parity.

The ONNX file takes a float32 NCHW batch (dynamic batch axis) named ``images`` and returns
``logits``; the spec (trainer/preprocess.py) says how to build that batch from an image.
Parity: the version's validation images go through fastai (``test_dl`` and the model, in
fp32) and through ONNX Runtime fed by ``preprocess``; the largest probability difference
is recorded, and an export above ``PARITY_TOLERANCE`` is not served. No Django here.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from fastai.data.transforms import IntToFloatTensor, Normalize, ToTensor
from fastai.vision.augment import RandomResizedCrop, Resize

from .artifacts import sha256_file
from .inference import answers_from_logits
from .preprocess import RESAMPLES, SPEC_FORMAT, SpecError, preprocess, spec_check, validation_extra

__all__ = [
    "ONNX_FILE",
    "PARITY_MAX_IMAGES",
    "PARITY_TOLERANCE",
    "SPEC_FILE",
    "OnnxExport",
    "export_onnx",
    "preprocessing_spec",
]

ONNX_FILE = "model.onnx"
SPEC_FILE = "model.onnx.json"
PARITY_TOLERANCE = 1e-4
# Parity is checked on every validation image up to this many, else on an even sample.
PARITY_MAX_IMAGES = 500
OPSET = 17
_BATCH = 64


@dataclass
class OnnxExport:
    """What ``export_onnx`` made. ``error`` says why it must not be served ('' if it may)."""

    path: Path | None = None
    spec_path: Path | None = None
    sha256: str = ""
    spec: dict = field(default_factory=dict)
    max_prob_diff: float | None = None
    parity_images: int = 0
    error: str = ""

    @property
    def servable(self) -> bool:
        return self.path is not None and not self.error


def _resample_name(mode) -> str:
    for name, value in RESAMPLES.items():
        if int(value) == int(mode):
            return name
    raise SpecError(f"Pillow resample mode {mode} has no name in the spec")


def _stats(value) -> list[float]:
    return [float(v) for v in torch.as_tensor(value).flatten().tolist()]


def preprocessing_spec(learn, *, architecture: str = "") -> dict:
    """The validation pipeline of ``learn.dls`` as a spec; SpecError for a step it cannot say."""
    resize: dict | None = None
    size: list[int] = []
    for tfm in learn.dls.after_item.fs:
        if isinstance(tfm, ToTensor):
            continue
        if isinstance(tfm, RandomResizedCrop):
            size = [int(n) for n in tfm.size]
            extra = validation_extra(size, tfm.val_xtra)
            resize = {
                "method": "random_resized_crop",
                "resample": _resample_name(tfm.mode),
                "resize_to": [size[0] + extra, size[1] + extra],
            }
        elif isinstance(tfm, Resize):
            size = [int(n) for n in tfm.size]
            resize = {"method": str(tfm.method), "resample": _resample_name(tfm.mode)}
            if resize["method"] != "squish":
                resize["pad_mode"] = str(tfm.pad_mode)
        elif getattr(tfm, "split_idx", None) != 0:  # 0: training only, not applied here
            raise SpecError(f"the item transform {type(tfm).__name__} has no ONNX equivalent")
    if resize is None:
        raise SpecError("the learner resizes no image, so inputs have no fixed size")
    divide_by, mean, std = None, None, None
    for tfm in learn.dls.after_batch.fs:
        if isinstance(tfm, IntToFloatTensor):
            divide_by = float(tfm.div)
        elif isinstance(tfm, Normalize):
            mean, std = _stats(tfm.mean), _stats(tfm.std)
        elif getattr(tfm, "split_idx", None) != 0:
            raise SpecError(f"the batch transform {type(tfm).__name__} has no ONNX equivalent")
    return spec_check(
        {
            "format": SPEC_FORMAT,
            "architecture": architecture,
            "classes": [str(c) for c in learn.dls.vocab],
            "input": "images",
            "output": "logits",
            "layout": "NCHW",
            "color": "RGB",
            "size": size,
            "resize": resize,
            "divide_by": divide_by or 1.0,
            "mean": mean,
            "std": std,
        }
    )


def _parity_sample(paths: Sequence, limit: int) -> list:
    paths = list(paths)
    if len(paths) <= limit:
        return paths
    step = len(paths) / limit
    return [paths[int(i * step)] for i in range(limit)]


def _fastai_probabilities(learn, model, items: list) -> np.ndarray:
    """fastai's own answer: ``test_dl``'s validation transforms and the fp32 model."""
    out = []
    dl = learn.dls.test_dl(items, bs=_BATCH, num_workers=0)
    with torch.inference_mode():
        for (xb,) in dl:
            logits = model(xb.cpu().as_subclass(torch.Tensor)).float()
            out.append(torch.softmax(logits, dim=1).numpy())
    return np.concatenate(out)


def _onnx_probabilities(session, spec: dict, items: list) -> np.ndarray:
    out = []
    for start in range(0, len(items), _BATCH):
        x = preprocess(items[start : start + _BATCH], spec)
        (logits,) = session.run([spec["output"]], {spec["input"]: x})
        out.append(
            np.array([a.probabilities for a in answers_from_logits(logits, spec["classes"])])
        )
    return np.concatenate(out)


def export_onnx(
    learn,
    output_dir: Path,
    parity_items: Sequence,
    *,
    architecture: str = "",
    max_images: int = PARITY_MAX_IMAGES,
) -> OnnxExport:
    """Write ``model.onnx`` and ``model.onnx.json`` to ``output_dir`` and check parity.

    Never raises for the export itself: a model that cannot be exported, or whose answers
    differ from fastai's, comes back with ``error`` set (served by torch instead).
    """
    import onnxruntime

    output_dir = Path(output_dir)
    try:
        spec = preprocessing_spec(learn, architecture=architecture)
    except SpecError as exc:
        return OnnxExport(error=f"not exported: {exc}")
    model = copy.deepcopy(learn.model).float().cpu().eval()
    path, spec_path = output_dir / ONNX_FILE, output_dir / SPEC_FILE
    dummy = torch.zeros(2, 3, spec["size"][1], spec["size"][0])
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter: 10x faster than the dynamo one here (0.4 s against
            # 6 s for resnet18 on 2 cores), it needs no onnxscript, and every backbone Loupe
            # offers exports with it. The parity check below catches any drift.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (dummy,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=[spec["input"]],
                output_names=[spec["output"]],
                dynamic_axes={spec["input"]: {0: "batch"}, spec["output"]: {0: "batch"}},
            )
    except Exception as exc:  # an operator ONNX lacks: the version is served by torch
        path.unlink(missing_ok=True)
        return OnnxExport(spec=spec, error=f"not exported: {type(exc).__name__}: {exc}")
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    result = OnnxExport(path=path, spec_path=spec_path, sha256=sha256_file(path), spec=spec)
    items = _parity_sample(parity_items, max_images)
    if not items:
        result.error = "no validation images to check its answers against fastai's"
        return result
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        expected = _fastai_probabilities(learn, model, items)
        got = _onnx_probabilities(session, spec, items)
    except Exception as exc:  # ONNX Runtime's own error types too: the run must still succeed
        result.error = f"parity could not be checked: {type(exc).__name__}: {exc}"
        return result
    result.parity_images = len(items)
    result.max_prob_diff = float(np.abs(expected - got).max())
    if result.max_prob_diff > PARITY_TOLERANCE:
        result.error = (
            f"its probabilities differ from fastai's by up to {result.max_prob_diff:.2g} on "
            f"{len(items)} validation images (the limit is {PARITY_TOLERANCE:g})"
        )
    return result
