"""trainer tests: CPU, offline, tiny images made here; no Django database."""

import random

import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, and an empty torch cache: pretrained weights are never downloaded."""
    import urllib.request

    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError("the trainer tried to use the network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    torch.hub.set_dir(str(tmp_path / "torch-home" / "hub"))


def make_dataset(root, *, per_class=12, size=24, classes=("red", "blue"), seed=0):
    """Solid colours with noise; every fourth image is in the validation split."""
    colours = {"red": (220, 40, 40), "blue": (40, 40, 220), "green": (40, 200, 40)}
    rng = random.Random(seed)
    items = []
    for label in classes:
        (root / label).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            base = colours[label]
            image = Image.new("RGB", (size + rng.randrange(8), size), base)
            for _ in range(30):
                xy = (rng.randrange(image.width), rng.randrange(image.height))
                image.putpixel(xy, tuple(rng.randrange(256) for _ in range(3)))
            path = root / label / f"{n}.png"
            image.save(path)
            items.append((str(path), label, "valid" if n % 4 == 0 else "train"))
    return items


@pytest.fixture
def items(tmp_path):
    return make_dataset(tmp_path / "data")
