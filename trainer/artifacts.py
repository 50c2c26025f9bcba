"""Model files on disk and their recorded sha256; no torch, no Django here."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .config import TrainingError

__all__ = ["ArtifactMismatch", "check_artifact", "sha256_file"]

_CHUNK = 1 << 20


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactMismatch(TrainingError):
    """The artifact on disk is not the file the database recorded; it was not loaded."""

    def __init__(self, path: Path, expected: str, actual: str, *, loaded_as: str = "unpickled"):
        self.path, self.expected, self.actual = Path(path), expected, actual
        super().__init__(
            f"Refusing to load {self.path}: its sha256 is {actual}, but the database recorded "
            f"{expected} when it was trained. The file was changed or replaced; it was not "
            f"{loaded_as}."
        )


def check_artifact(path: Path | str, expected_sha256: str, *, loaded_as: str = "unpickled") -> str:
    """The file's sha256, after checking it is the one recorded; raise before it is read."""
    path = Path(path)
    if not expected_sha256:
        raise TrainingError(f"Refusing to load {path}: no sha256 was recorded for it.")
    try:
        actual = sha256_file(path)
    except FileNotFoundError:
        raise TrainingError(f"The model file {path} does not exist.") from None
    if actual != expected_sha256:
        raise ArtifactMismatch(path, expected_sha256, actual, loaded_as=loaded_as)
    return actual
