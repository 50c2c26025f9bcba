"""ImageNet weights: fetching from a loopback server, checking imported files, using them."""

from pathlib import Path

import pytest
import torch

from tests.weights_server import loopback_only, refused_url, serve, tensor_file
from trainer import ARCHITECTURES, PretrainedWeights, TrainConfig, TrainingError, train
from trainer.config import BACKBONE_FILES, BACKBONE_URL
from trainer.learning import _resolve_pretrained, _vision_learner, cached_weights_path
from trainer.weights import (
    BackboneSpec,
    WeightsError,
    fetch,
    load_backbone_state,
    sha256_file,
    spec_for,
)


@pytest.fixture
def server(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    root.mkdir()
    loopback_only(monkeypatch)
    with serve(root) as base:
        yield root, base


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_backbone_files_are_torchvisions_default_weights():
    from torchvision.models import get_model_weights

    for architecture, filename in BACKBONE_FILES.items():
        assert get_model_weights(architecture).DEFAULT.url == BACKBONE_URL + filename
    assert spec_for("resnet18").hash_prefix == "f37072fd"
    with pytest.raises(WeightsError, match="supported"):
        spec_for("vgg11")


def test_fetch_from_a_mirror_checks_the_hash_and_reports_progress(server, tmp_path):
    root, base = server
    served = tensor_file(root)
    seen = []

    got = fetch(
        BackboneSpec("x", served.name),
        tmp_path / "store",
        base_url=base,
        on_progress=lambda done, total: seen.append((done, total)),
    )

    assert got.path == tmp_path / "store" / served.name
    assert got.path.read_bytes() == served.read_bytes()
    assert got.sha256 == sha256_file(served) and got.size == served.stat().st_size
    assert got.source == base + served.name
    assert seen[-1] == (got.size, got.size)
    assert leftovers(tmp_path / "store") == [served.name]


def test_a_wrong_hash_keeps_nothing(server, tmp_path):
    root, base = server
    served = tensor_file(root)
    wrong = root / "x-00000000.pth"
    served.rename(wrong)

    with pytest.raises(WeightsError, match="Wrong hash.*x-00000000.pth.*00000000"):
        fetch(BackboneSpec("x", wrong.name), tmp_path / "store", base_url=base)

    assert leftovers(tmp_path / "store") == []


def test_a_truncated_body_keeps_nothing(server, tmp_path):
    root, base = server
    served = tensor_file(root)

    with pytest.raises(WeightsError, match="truncated"):
        fetch(BackboneSpec("x", served.name), tmp_path / "store", base_url=base + "truncated/")

    assert leftovers(tmp_path / "store") == []


def test_a_404_says_so(server, tmp_path):
    _, base = server

    with pytest.raises(WeightsError, match="HTTP 404"):
        fetch(BackboneSpec("x", "x-12345678.pth"), tmp_path / "store", base_url=base)

    assert leftovers(tmp_path / "store") == []


def test_a_refused_connection_says_so(monkeypatch, tmp_path):
    loopback_only(monkeypatch)

    with pytest.raises(WeightsError, match="connection refused"):
        fetch(BackboneSpec("x", "x-12345678.pth"), tmp_path / "store", base_url=refused_url())

    assert leftovers(tmp_path / "store") == []


def test_offline_never_tries_the_network(tmp_path):
    # conftest makes urlopen fail the test: reaching it would show.
    with pytest.raises(WeightsError, match="LOUPE_OFFLINE=1.*import"):
        fetch(spec_for("resnet18"), tmp_path / "store", offline=True)

    assert leftovers(tmp_path / "store") == []


# Checking a file from elsewhere ---------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_state():
    from torchvision import models

    return models.resnet18(weights=None).state_dict()


def test_a_state_dict_for_the_architecture_loads_with_its_own_head(tmp_path, resnet18_state):
    state = dict(resnet18_state)
    state["fc.weight"], state["fc.bias"] = torch.randn(10, 512), torch.randn(10)  # 10 classes
    path = tensor_file(tmp_path, "resnet18", state=state)

    checked = load_backbone_state("resnet18", path)

    assert torch.equal(checked["conv1.weight"], state["conv1.weight"])
    assert checked["fc.weight"].shape == (1000, 512)  # the model's own head, not the file's


def test_weights_of_another_architecture_are_refused_with_the_reason(tmp_path):
    from torchvision import models

    path = tensor_file(tmp_path, "mobilenet", state=models.mobilenet_v3_large().state_dict())

    with pytest.raises(WeightsError, match="do not fit resnet18: .* missing .*unexpected"):
        load_backbone_state("resnet18", path)


def test_weights_with_the_wrong_shapes_are_refused(tmp_path, resnet18_state):
    state = dict(resnet18_state)
    state["conv1.weight"] = torch.randn(64, 1, 7, 7)
    path = tensor_file(tmp_path, "resnet18", state=state)

    with pytest.raises(WeightsError, match=r"wrong shape \(e.g. conv1.weight"):
        load_backbone_state("resnet18", path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "the-payload-ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Payload(marker)}, path)
    assert not marker.exists()

    with pytest.raises(WeightsError, match="weights_only=True"):
        load_backbone_state("resnet18", path)

    assert not marker.exists()


@pytest.mark.parametrize("content", [b"not a pickle at all", b""])
def test_a_file_that_is_no_weights_file_is_refused(tmp_path, content):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)

    with pytest.raises(WeightsError, match="Not a plain weights file"):
        load_backbone_state("resnet18", path)


def test_a_file_holding_no_tensors_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)

    with pytest.raises(WeightsError, match="Not a state_dict"):
        load_backbone_state("resnet18", path)


# Using them -----------------------------------------------------------------------------


def test_resolution_follows_the_callers_weights_then_the_torch_cache(tmp_path, resnet18_state):
    assert _resolve_pretrained(TrainConfig(pretrained="auto"))[0] is None
    with pytest.raises(TrainingError, match="required .*no resnet18 weights"):
        _resolve_pretrained(TrainConfig(pretrained="on"))
    assert _resolve_pretrained(TrainConfig(pretrained="off"))[0] is None

    missing = PretrainedWeights(None, note="the download failed: connection refused")
    assert _resolve_pretrained(TrainConfig(), missing) == (
        None,
        "trained from scratch: the download failed: connection refused",
    )

    # A file in the torch cache whose bytes do not carry its name's hash prefix is not used.
    cached = cached_weights_path("resnet18")
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"weights")
    path, note = _resolve_pretrained(TrainConfig(pretrained="auto"))
    assert path is None and "damaged" in note

    stored = tensor_file(tmp_path / "store", "resnet18", state=resnet18_state)
    digest = sha256_file(stored)
    path, note = _resolve_pretrained(TrainConfig(), PretrainedWeights(stored, sha256=digest))
    assert path == stored and stored.name in note and digest in note
    with pytest.raises(TrainingError, match="Refusing the weights file"):
        _resolve_pretrained(TrainConfig(), PretrainedWeights(stored, sha256="0" * 64))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_each_architecture_fine_tunes_from_its_file_with_its_own_statistics(
    architecture, tmp_path, items
):
    from fastai.vision.all import Normalize, model_meta
    from torchvision import models
    from torchvision.models import get_model_weights

    from trainer.learning import _dataloaders

    state = getattr(models, architecture)(weights=None).state_dict()
    first = next(k for k, v in state.items() if v.dim() == 4)  # the first convolution
    state[first] = torch.full_like(state[first], 0.0123)
    path = tensor_file(tmp_path, architecture, state=state)
    config = TrainConfig(architecture=architecture, image_size=32, batch_size=4, augment=False)
    dls = _dataloaders(items, config, ["blue", "red"], torch.device("cpu"))
    metas = len(model_meta)

    learn = _vision_learner(dls, config, path)

    body = dict(learn.model[0].named_parameters())
    assert any(torch.equal(p, state[first]) for p in body.values())
    norm = [t for t in dls.after_batch.fs if isinstance(t, Normalize)]
    expected = get_model_weights(architecture).DEFAULT.transforms()
    assert len(norm) == 1
    assert norm[0].mean.flatten().tolist() == pytest.approx(expected.mean)
    assert norm[0].std.flatten().tolist() == pytest.approx(expected.std)
    assert learn.arch is getattr(models, architecture) and len(model_meta) == metas
    assert learn.opt is None or learn.opt.frozen_idx  # fine_tune starts with a frozen body


def test_train_with_stored_weights_fine_tunes_and_names_the_file(tmp_path, items, resnet18_state):
    stored = tensor_file(tmp_path / "store", "resnet18", state=resnet18_state)
    digest = sha256_file(stored)
    config = TrainConfig(
        image_size=32, epochs=1, freeze_epochs=1, batch_size=8, augment=False, pretrained="on"
    )

    result = train(
        items, config, output_dir=tmp_path / "model", weights=PretrainedWeights(stored, digest)
    )

    assert result.pretrained and stored.name in result.pretrained_note
    assert digest in result.pretrained_note
    assert [e.phase for e in result.epochs] == ["frozen", "unfrozen"]
    assert result.precision == "fp32" and result.metrics_dict()["precision"] == "fp32"
