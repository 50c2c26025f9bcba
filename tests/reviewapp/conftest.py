import sys

import pytest


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Every test writes its images under its own temporary MEDIA_ROOT."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def no_weights_download(settings, monkeypatch, tmp_path):
    """Never the network, and an empty torch cache: a test that fetches sets up its own
    loopback mirror (tests/weights_server.py)."""
    settings.LOUPE_OFFLINE = True
    settings.LOUPE_WEIGHTS_URL = ""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    if "torch.hub" in sys.modules:
        monkeypatch.setattr(sys.modules["torch.hub"], "_hub_dir", None)


class Enqueued(list):
    """The jobs services queued, as (task name, args), in order."""

    def ids(self, task: str) -> list:
        return [args[0] for name, args in self if name == task]


@pytest.fixture
def enqueued(monkeypatch):
    """Jobs are recorded instead of sent to a broker (see reviewapp.enqueue)."""
    sent = Enqueued()
    monkeypatch.setattr(
        "reviewapp.enqueue._dispatch",
        lambda task, args, countdown=None: sent.append((task, tuple(args))),
    )
    return sent


# Serving: two tiny real models, trained once per test session -------------------------


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    """A tiny exported fastai classifier of red and blue images."""
    from tests.factories import train_colour_model

    return train_colour_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def crossed_model(tmp_path_factory):
    """Learnt with red and blue swapped: it disagrees with ``model`` on every image."""
    from tests.factories import train_colour_model

    return train_colour_model(tmp_path_factory.mktemp("crossed"), swap=True)


@pytest.fixture
def serving_inline(settings):
    """An empty model cache, and shadow versions that answer within the request, so a
    test sees their rows at once (the async path has its own test)."""
    from reviewapp import serving

    settings.LOUPE_SHADOW_ASYNC = False
    serving.model_cache_clear()
    yield
    serving.model_cache_clear()
