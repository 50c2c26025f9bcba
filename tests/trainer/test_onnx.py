"""ONNX export, its preprocessing spec and ONNX Runtime serving, on tiny generated images."""

import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainer import (
    ArtifactMismatch,
    OnnxPredictor,
    Predictor,
    SpecError,
    TrainConfig,
    TrainingError,
    load_learner_checked,
    onnx_export,
    sha256_file,
    train,
)
from trainer.preprocess import SPEC_FORMAT, preprocess, spec_check

TINY = dict(image_size=32, epochs=1, freeze_epochs=0, batch_size=8, augment=False)
COLOURS = {"red": (220, 40, 40), "blue": (40, 40, 220)}


def _image(rng, colour, size):
    image = Image.new("RGB", size, colour)
    for _ in range(40):
        xy = (rng.randrange(size[0]), rng.randrange(size[1]))
        image.putpixel(xy, tuple(rng.randrange(256) for _ in range(3)))
    return image


def _dataset(root, per_class=10, seed=0):
    """Wide, tall and small images, so crop, pad and squish all have work to do."""
    rng = random.Random(seed)
    shapes = [(48, 30), (30, 52), (20, 20), (64, 40), (25, 41)]
    items = []
    for label, colour in COLOURS.items():
        (root / label).mkdir(parents=True)
        for n in range(per_class):
            path = root / label / f"{n}.png"
            _image(rng, colour, shapes[n % len(shapes)]).save(path)
            items.append((str(path), label, "valid" if n % 3 == 0 else "train"))
    return items


def _odd_files(rng):
    """Bytes of images in the modes people upload: RGBA, palette with transparency, grey."""
    rgba = _image(rng, (200, 30, 30), (37, 23)).convert("RGBA")
    rgba.putalpha(128)
    palette = _image(rng, (30, 30, 200), (23, 45)).convert("P")
    palette.info["transparency"] = 0
    grey = _image(rng, (120, 120, 120), (50, 50)).convert("L")
    files = []
    for image, fmt in ((rgba, "PNG"), (palette, "PNG"), (grey, "JPEG"), (rgba, "WEBP")):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        files.append(buffer.getvalue())
    return files


@pytest.fixture(scope="module", params=["crop", "pad", "squish", "random_resized_crop"])
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"onnx-{request.param}")
    items = _dataset(root / "data")
    config = TrainConfig(**TINY, resize_method=request.param, pretrained="off")
    return items, train(items, config, output_dir=root / "model")


def test_every_resize_method_exports_with_parity(exported):
    items, result = exported
    onnx = result.onnx
    assert onnx.servable, onnx.error
    assert onnx.parity_images == sum(1 for *_, split in items if split == "valid")
    assert 0 <= onnx.max_prob_diff <= onnx_export.PARITY_TOLERANCE
    assert onnx.sha256 == sha256_file(onnx.path) == result.sha256["model.onnx"]
    assert onnx.spec["classes"] == result.vocab and onnx.spec["format"] == SPEC_FORMAT
    assert onnx.spec["resize"]["method"] == result_method(result)
    assert onnx.spec["mean"] is None  # trained from scratch: fastai adds no Normalize


def result_method(result):
    import json

    return json.loads(result.config_path.read_text())["config"]["resize_method"]


def test_preprocessing_builds_fastais_batch_pixel_for_pixel(exported):
    items, result = exported
    learn = load_learner_checked(result.export_path)
    rng = random.Random(1)
    files = [Path(path).read_bytes() for path, *_ in items[:5]] + _odd_files(rng)
    (expected,) = learn.dls.test_dl(files, bs=len(files), num_workers=0).one_batch()
    got = preprocess(files, result.onnx.spec)
    assert got.shape == tuple(expected.shape) and got.dtype == np.float32
    assert np.abs(got - expected.cpu().numpy()).max() <= 1e-6


def test_onnx_runtime_answers_as_the_torch_predictor_does(exported):
    items, result = exported
    files = [Path(path).read_bytes() for path, *_ in items] + _odd_files(random.Random(2))
    torch_answers = Predictor.load(result.export_path, result.sha256["export.pkl"]).predict(files)
    onnx = OnnxPredictor.load(result.onnx.path, result.onnx.sha256, result.onnx.spec)
    onnx_answers = onnx.predict(files)
    assert onnx.runtime == "onnxruntime" and "CPUExecutionProvider" in onnx.providers
    assert [a.label for a in onnx_answers] == [a.label for a in torch_answers]
    diff = max(
        abs(p - q)
        for a, b in zip(onnx_answers, torch_answers, strict=True)
        for p, q in zip(a.probabilities, b.probabilities, strict=True)
    )
    assert diff <= 1e-4
    assert all(
        abs(a.energy - b.energy) < 1e-3 for a, b in zip(onnx_answers, torch_answers, strict=True)
    )


def test_a_tampered_onnx_file_is_refused_before_onnx_runtime_reads_it(
    exported, tmp_path, monkeypatch
):
    _, result = exported
    tampered = tmp_path / "model.onnx"
    tampered.write_bytes(result.onnx.path.read_bytes() + b"\0")
    import onnxruntime

    def never(*args, **kwargs):
        raise AssertionError("ONNX Runtime was given a file whose sha256 is wrong")

    monkeypatch.setattr(onnxruntime, "InferenceSession", never)
    with pytest.raises(ArtifactMismatch, match="not given to ONNX Runtime"):
        OnnxPredictor.load(tampered, result.onnx.sha256, result.onnx.spec)
    with pytest.raises(TrainingError, match="no sha256"):
        OnnxPredictor.load(result.onnx.path, "", result.onnx.spec)


def test_answers_that_drift_from_fastais_fail_the_parity_check(exported, tmp_path, monkeypatch):
    items, result = exported
    learn = load_learner_checked(result.export_path)
    real = onnx_export.preprocess
    monkeypatch.setattr(onnx_export, "preprocess", lambda images, spec: real(images, spec) * 1.5)
    valid = [path for path, _, split in items if split == "valid"]

    drifted = onnx_export.export_onnx(learn, tmp_path, valid)

    assert not drifted.servable and drifted.path.exists()
    assert drifted.max_prob_diff > onnx_export.PARITY_TOLERANCE
    assert "differ from fastai's" in drifted.error and str(len(valid)) in drifted.error


def test_a_transform_onnx_cannot_say_is_not_exported(exported, tmp_path):
    from fastai.vision.augment import Dihedral

    items, result = exported
    learn = load_learner_checked(result.export_path)
    learn.dls.after_item.fs.append(Dihedral(p=1.0))  # split_idx None: it would apply here
    learn.dls.after_item.fs[-1].split_idx = None

    refused = onnx_export.export_onnx(learn, tmp_path, [items[0][0]])

    assert not refused.servable and refused.path is None
    assert "Dihedral" in refused.error and not (tmp_path / "model.onnx").exists()


def test_train_can_leave_onnx_out(tmp_path):
    items = _dataset(tmp_path / "data", per_class=4)
    result = train(
        items, TrainConfig(**TINY, pretrained="off"), output_dir=tmp_path / "m", onnx=False
    )
    assert result.onnx is None and "model.onnx" not in result.sha256


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "other/1"}, "format"),
        ({"size": [32]}, "size"),
        ({"resize": {"method": "zoom", "resample": "bilinear"}}, "resize.method"),
        ({"mean": [0.5, 0.5]}, "mean"),
        ({"classes": ["one"]}, "classes"),
    ],
)
def test_a_broken_spec_is_refused_with_the_key_named(exported, change, message):
    _, result = exported
    with pytest.raises(SpecError, match=message):
        spec_check({**result.onnx.spec, **change})


def test_pretrained_learners_normalise_with_imagenet_stats(exported):
    from fastai.data.transforms import Normalize
    from fastai.vision.core import imagenet_stats

    _, result = exported
    learn = load_learner_checked(result.export_path)
    learn.dls.after_batch.fs.append(Normalize.from_stats(*imagenet_stats, cuda=False))
    spec = onnx_export.preprocessing_spec(learn)
    assert spec["mean"] == pytest.approx(list(imagenet_stats[0]))
    assert spec["std"] == pytest.approx(list(imagenet_stats[1]))
    x = preprocess([Image.new("RGB", (40, 40), (255, 0, 0))], spec)
    assert x[0, 0, 0, 0] == pytest.approx((1 - 0.485) / 0.229, rel=1e-6)
    assert torch.is_tensor(torch.as_tensor(x))
