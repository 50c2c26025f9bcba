"""ImageNet backbone weights: which file each architecture needs, fetching it, and checking
a file from elsewhere before it is used. No Django here.

A weights file is only ever read with ``torch.load(weights_only=True)``, so a file that
would run code when unpickled is refused before any of it runs.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import queue
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .artifacts import sha256_file
from .config import BACKBONE_FILES, BACKBONE_URL

__all__ = [
    "BackboneSpec",
    "FetchedWeights",
    "WeightsError",
    "build_backbone",
    "check_hash_prefix",
    "fetch",
    "hub_cache_path",
    "load_backbone_state",
    "sha256_file",
    "spec_for",
]

# torchvision's own rule (torch.hub.HASH_REGEX): the hex digits after the last '-'.
_HASH_PREFIX = re.compile(r"-([a-f0-9]+)\.")
_CHUNK = 1 << 20
ProgressFn = Callable[[int, int], None]


class WeightsError(RuntimeError):
    """Weights could not be fetched or do not fit; the message says exactly why."""


@dataclass(frozen=True)
class BackboneSpec:
    architecture: str
    filename: str  # torchvision's file name, carrying a prefix of the file's sha256

    @property
    def url(self) -> str:
        return BACKBONE_URL + self.filename

    @property
    def hash_prefix(self) -> str:
        match = _HASH_PREFIX.search(self.filename)
        return match.group(1) if match else ""


@dataclass
class FetchedWeights:
    path: Path
    sha256: str
    size: int
    source: str  # the URL it came from


def spec_for(architecture: str) -> BackboneSpec:
    try:
        return BackboneSpec(architecture, BACKBONE_FILES[architecture])
    except KeyError:
        raise WeightsError(
            f"No ImageNet weights are known for {architecture!r}; "
            f"supported: {', '.join(BACKBONE_FILES)}."
        ) from None


def check_hash_prefix(spec: BackboneSpec, sha256: str) -> None:
    if spec.hash_prefix and not sha256.startswith(spec.hash_prefix):
        raise WeightsError(
            f"Wrong hash: {spec.filename} should have a sha256 starting {spec.hash_prefix}, "
            f"but the file's is {sha256[:12]}...; it was not kept."
        )


def hub_cache_path(spec: BackboneSpec) -> Path:
    """Where torch.hub (and so fastai) keeps this file on this machine: the fallback."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / spec.filename


class _Hasher:
    """sha256 on its own thread, so hashing overlaps the download (hashlib frees the GIL)."""

    def __init__(self):
        self.digest = hashlib.sha256()
        self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self.thread = threading.Thread(target=self._run, name="weights-sha256", daemon=True)
        self.thread.start()

    def _run(self):
        while (chunk := self.chunks.get()) is not None:
            self.digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        self.chunks.put(chunk)

    def hexdigest(self) -> str:
        self.chunks.put(None)
        self.thread.join()
        return self.digest.hexdigest()


def fetch(
    spec: BackboneSpec,
    dest_dir: Path,
    *,
    base_url: str | None = None,
    offline: bool = False,
    on_progress: ProgressFn | None = None,
    timeout: float = 30.0,
) -> FetchedWeights:
    """Download ``spec``'s file into ``dest_dir``; it appears there only once its hash fits.

    ``base_url`` is a mirror holding torchvision's file names. The body goes to a temporary
    file in ``dest_dir`` and is renamed (atomic on one filesystem) after the check; on any
    failure nothing stays behind.
    """
    if offline:
        raise WeightsError(
            f"No network: LOUPE_OFFLINE=1 is set, so {spec.filename} was not fetched. "
            "Import the file instead (manage.py weights import FILE --arch "
            f"{spec.architecture})."
        )
    url = (base_url.rstrip("/") + "/" + spec.filename) if base_url else spec.url
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            size, sha256 = _download(url, out, on_progress, timeout)
        check_hash_prefix(spec, sha256)
        path = dest_dir / spec.filename
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return FetchedWeights(path=path, sha256=sha256, size=size, source=url)


def _download(url: str, out, on_progress: ProgressFn | None, timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"User-Agent": "Loupe"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise WeightsError(
            f"The server answered HTTP {exc.code} ({exc.reason}) for {url}."
        ) from None
    except urllib.error.URLError as exc:
        raise WeightsError(f"Could not connect to {url}: {_reason(exc.reason)}.") from None
    except (TimeoutError, OSError) as exc:
        raise WeightsError(f"Could not connect to {url}: {_reason(exc)}.") from None
    hasher = _Hasher()
    done, last, total = 0, 0.0, 0
    try:
        with response:
            total = int(response.headers.get("Content-Length") or 0)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                hasher.update(chunk)
                done += len(chunk)
                now = time.monotonic()
                if on_progress is not None and now - last >= 0.25:
                    last = now
                    on_progress(done, total)
    except (OSError, http.client.HTTPException) as exc:
        if total and done < total:
            raise WeightsError(
                f"The download from {url} is truncated: {done:,} of {total:,} bytes arrived."
            ) from None
        raise WeightsError(
            f"The download from {url} broke off after {done:,} bytes: {_reason(exc)}."
        ) from None
    finally:
        sha256 = hasher.hexdigest()
    if total and done != total:
        raise WeightsError(
            f"The download from {url} is truncated: {done:,} of {total:,} bytes arrived."
        )
    if on_progress is not None:
        on_progress(done, total or done)
    return done, sha256


def _reason(exc) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(getattr(exc, "strerror", None) or exc)


# Checking a file before it is used ------------------------------------------------------


def _head_prefix(model) -> str:
    """The name of the model's last Linear layer: the ImageNet classifier, which fastai cuts."""
    import torch.nn as nn

    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return names[-1] + "." if names else "\0"


def _new_model(architecture: str):
    from torchvision import models

    return getattr(models, architecture)(weights=None)


def load_backbone_state(architecture: str, path: Path, *, model=None) -> dict:
    """The file's state_dict, checked to fit ``architecture`` except for the classifier head.

    Returns a state_dict the torchvision model loads with ``strict=True``. Anything else
    (code in the pickle, another architecture, missing or extra tensors) raises WeightsError.
    """
    import pickle

    import torch

    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"Not a plain weights file (refused by torch.load(weights_only=True)): {first}"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint around the state_dict
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise WeightsError("Not a state_dict: the file holds no mapping of names to tensors.")
    model = model if model is not None else _new_model(architecture)
    head = _head_prefix(model)
    own = model.state_dict()
    body = {k: v for k, v in state.items() if not k.startswith(head)}
    missing = sorted(k for k in own if not k.startswith(head) and k not in body)
    extra = sorted(k for k in body if k not in own)
    if missing or extra:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            detail.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        raise WeightsError(
            f"These weights do not fit {architecture}: {' and '.join(detail)} tensors."
        )
    wrong = [k for k, v in body.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise WeightsError(
            f"These weights do not fit {architecture}: {len(wrong)} tensors have the wrong "
            f"shape (e.g. {wrong[0]}: {tuple(body[wrong[0]].shape)}, "
            f"expected {tuple(own[wrong[0]].shape)})."
        )
    # The head keeps the model's own tensors when the file's are for another class count.
    merged = {**own, **body}
    for key, value in state.items():
        if key.startswith(head) and key in own and tuple(value.shape) == tuple(own[key].shape):
            merged[key] = value
    return merged


def build_backbone(architecture: str, weights_path: Path | None = None):
    """The torchvision model, with the weights file's tensors when one is given."""
    model = _new_model(architecture)
    if weights_path is not None:
        model.load_state_dict(load_backbone_state(architecture, weights_path, model=model))
    return model
