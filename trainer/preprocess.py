"""The validation transforms of a fastai image learner, in Pillow and numpy; no torch here.

A spec (a small JSON-able dict, written beside every ONNX export) names what fastai's
``test_dl`` does to an image before the model sees it: open as RGB, one Resize or
RandomResizedCrop in its validation form, to a uint8 CHW tensor, divide by 255, normalise.
``preprocess(images, spec)`` does the same with Pillow's own resize, so ONNX Runtime is fed
the very pixels fastai would feed torch. fastai ships no torch-free version of its
pipeline, so it is rebuilt here from fastai's source (vision/augment.py: ``_do_crop_pad``,
``Resize.encodes``, ``RandomResizedCrop.before_call``); the export's parity check proves
it on every version's validation images.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .config import TrainingError

__all__ = ["SPEC_FORMAT", "SpecError", "load_rgb", "preprocess", "resized", "spec_check"]

SPEC_FORMAT = "loupe.onnx-preprocessing/1"
RESAMPLES = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
RESIZE_METHODS = ("crop", "pad", "squish", "random_resized_crop")
PAD_MODES = ("zeros", "border", "reflection")


class SpecError(TrainingError):
    """A preprocessing spec that this version of Loupe cannot follow."""


def spec_check(spec: dict) -> dict:
    """``spec`` itself, after checking every key the preprocessing reads."""

    def need(condition: bool, message: str) -> None:
        if not condition:
            raise SpecError(f"The ONNX preprocessing spec is not usable: {message}.")

    need(isinstance(spec, dict), "it is not a JSON object")
    need(spec.get("format") == SPEC_FORMAT, f"format must be {SPEC_FORMAT!r}")
    size = spec.get("size")
    need(
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(n, int) and n > 0 for n in size),
        "size must be [width, height]",
    )
    resize = spec.get("resize") or {}
    need(resize.get("method") in RESIZE_METHODS, f"resize.method must be one of {RESIZE_METHODS}")
    need(resize.get("resample") in RESAMPLES, f"resize.resample must be one of {tuple(RESAMPLES)}")
    if resize["method"] in ("crop", "pad"):
        need(resize.get("pad_mode") in PAD_MODES, f"resize.pad_mode must be one of {PAD_MODES}")
    if resize["method"] == "random_resized_crop":
        to = resize.get("resize_to")
        need(isinstance(to, list) and len(to) == 2, "resize.resize_to must be [width, height]")
    for key in ("mean", "std"):
        value = spec.get(key)
        need(
            value is None or (isinstance(value, list) and len(value) == 3), f"{key} needs 3 values"
        )
    need(isinstance(spec.get("divide_by"), (int, float)) and spec["divide_by"] > 0, "divide_by > 0")
    classes = spec.get("classes")
    need(isinstance(classes, list) and len(classes) >= 2, "classes must list the class names")
    return spec


def load_rgb(item) -> Image.Image:
    """What fastai's ``PILImage.create`` makes of a path, the file's bytes or a PIL image."""
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, np.ndarray):
        return Image.fromarray(item).convert("RGB")
    if isinstance(item, (bytes, bytearray, memoryview)):
        item = io.BytesIO(bytes(item))
    elif not isinstance(item, (str, Path)):
        raise TypeError(f"Cannot open {type(item).__name__} as an image.")
    image = Image.open(item)
    image.load()
    return image.convert("RGB")


def _pad(image: Image.Image, left: int, top: int, right: int, bottom: int, mode: str):
    """torchvision's pad of a PIL image, which fastai calls: zeros, border or reflection."""
    if mode == "zeros":
        return ImageOps.expand(image, border=(left, top, right, bottom), fill=(0, 0, 0))
    pixels = np.asarray(image)
    np_mode = {"border": "edge", "reflection": "reflect"}[mode]
    return Image.fromarray(np.pad(pixels, ((top, bottom), (left, right), (0, 0)), mode=np_mode))


def _crop_pad(image, size, top_left, resample, *, pad_mode="zeros", resize_to=None):
    """fastai's ``_do_crop_pad`` for a PIL image: crop and/or pad to ``size`` from
    ``top_left`` (either may lie outside the image), then resize to ``resize_to``."""
    (w, h), (x, y), (ow, oh) = size, top_left, image.size
    if x >= 0 or y >= 0 or x + w <= ow or y + h <= oh:
        image = image.crop((max(x, 0), max(y, 0), min(x + w, ow), min(y + h, oh)))
    if x < 0 or y < 0 or x + w >= ow or y + h >= oh:
        right, bottom = max(w - ow + x, 0), max(h - oh + y, 0)
        image = _pad(image, max(-x, 0), max(-y, 0), right, bottom, pad_mode)
    if resize_to is not None:
        image = image.resize(tuple(resize_to), resample)
    return image


def resized(image: Image.Image, spec: dict) -> Image.Image:
    """The validation form of the spec's Resize or RandomResizedCrop."""
    resize = spec["resize"]
    size = tuple(spec["size"])
    resample = RESAMPLES[resize["resample"]]
    method = resize["method"]
    w, h = image.size
    if method == "squish":
        return _crop_pad(image, (w, h), (0, 0), resample, resize_to=size)
    if method == "random_resized_crop":
        # Validation: the whole image squished to resize_to, then centre-cropped to size.
        to = tuple(resize["resize_to"])
        image = _crop_pad(image, (w, h), (0, 0), resample, resize_to=to)
        top_left = ((to[0] - size[0]) // 2, (to[1] - size[1]) // 2)
        return _crop_pad(image, size, top_left, resample) if to != size else image
    # crop: the largest centred window of the target's shape; pad: the smallest one that
    # holds the whole image (the rest padded).
    ratio_w, ratio_h = w / size[0], h / size[1]
    smaller = ratio_w < ratio_h
    m = ratio_w if smaller == (method == "crop") else ratio_h
    window = (int(m * size[0]), int(m * size[1]))
    top_left = (int(0.5 * (w - window[0])), int(0.5 * (h - window[1])))
    return _crop_pad(image, window, top_left, resample, pad_mode=resize["pad_mode"], resize_to=size)


def preprocess(images: Sequence, spec: dict) -> np.ndarray:
    """The float32 NCHW batch that fastai's ``test_dl`` would build from ``images``."""
    pixels = np.stack(
        [np.asarray(resized(load_rgb(item), spec), dtype=np.uint8) for item in images]
    )
    batch = pixels.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(spec["divide_by"])
    if spec.get("mean") is not None:
        mean = np.asarray(spec["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(spec["std"], dtype=np.float32).reshape(1, 3, 1, 1)
        batch = (batch - mean) / std
    return np.ascontiguousarray(batch)


def validation_extra(size: Sequence[int], val_xtra: float) -> int:
    """RandomResizedCrop's margin added to each side before the validation centre crop."""
    return math.ceil(max(size) * val_xtra / 8) * 8
