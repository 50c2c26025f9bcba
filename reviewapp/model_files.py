"""A version's portable model: its ONNX columns, exporting versions trained before Loupe
made ONNX files, and the ONNX file and its preprocessing spec for download.

A download is checked against its recorded sha256 before it is offered, so a user never
downloads a file that is not the one Loupe trained and checked.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from trainer import sha256_file

from .models import Image, ImageScore, ModelVersion

__all__ = [
    "ModelFileMissing",
    "OnnxDownload",
    "onnx_download",
    "onnx_fields",
    "onnx_spec_download",
    "version_onnx_export",
]

logger = logging.getLogger(__name__)


def _relative(path: Path) -> str:
    return str(Path(path).resolve().relative_to(Path(settings.MEDIA_ROOT).resolve()))


def onnx_fields(exported) -> dict:
    """A version's ONNX columns from a trainer ``OnnxExport`` (None: export was off)."""
    if exported is None:
        return {"onnx_error": "Not exported: ONNX export was off (LOUPE_ONNX_EXPORT=0)."}
    return {
        "onnx_file": _relative(exported.path) if exported.path is not None else "",
        "onnx_sha256": exported.sha256,
        "onnx_spec": exported.spec,
        "onnx_max_prob_diff": exported.max_prob_diff,
        "onnx_parity_images": exported.parity_images,
        "onnx_error": exported.error,
    }


def _validation_paths(version: ModelVersion) -> list[str]:
    """The files of the version's validation images: its run's snapshot, else its scores,
    else the project's labeled validation images now."""
    run = version.run if version.run_id else None
    if run is not None and run.snapshot:
        ids = [pk for pk, _, split in run.snapshot if split == Image.Split.VALID]
    else:
        ids = list(
            ImageScore.objects.filter(version=version, split=Image.Split.VALID).values_list(
                "image_id", flat=True
            )
        )
    images = Image.objects.filter(pk__in=ids)
    if not ids:
        images = Image.objects.filter(
            project_id=version.project_id,
            split=Image.Split.VALID,
            status=Image.Status.ACTIVE,
            label__isnull=False,
        )
    media = Path(settings.MEDIA_ROOT)
    names = images.order_by("pk").values_list("file", flat=True)
    return [str(media / name) for name in names if (media / name).exists()]


def version_onnx_export(*, version: ModelVersion) -> ModelVersion:
    """Export ``version`` to ONNX now, beside its fastai export, and check its parity.

    For versions trained before Loupe exported ONNX: their fastai export (checked by sha256
    first) is loaded here, once, in this process. The next warm pass serves it with ONNX
    Runtime when the check passes.
    """
    from trainer import export_onnx, load_learner_checked

    learn = load_learner_checked(version.artifact_path(), version.export_sha256)
    exported = export_onnx(
        learn,
        version.artifact_path().parent,
        _validation_paths(version),
        architecture=str((version.config or {}).get("architecture", "")),
    )
    fields = onnx_fields(exported)
    ModelVersion.objects.filter(pk=version.pk).update(**fields)
    for name, value in fields.items():
        setattr(version, name, value)
    logger.info(
        "v%s of %s exported to ONNX: %s",
        version.number,
        version.project_id,
        exported.error or "parity passed",
    )
    return version


class ModelFileMissing(Exception):
    """The version has no ONNX file to offer, or the file is not the one trained."""


@dataclass
class OnnxDownload:
    path: Path
    filename: str
    sha256: str


def _base_name(version: ModelVersion) -> str:
    return f"{version.project.slug}-v{version.number}"


def onnx_download(*, version: ModelVersion) -> OnnxDownload:
    """The version's ONNX file, after checking it is the one recorded."""
    if not version.onnx_file or not version.onnx_sha256:
        raise ModelFileMissing(
            f"Model v{version.number} has no ONNX export: {version.onnx_error or 'none was made'}"
        )
    path = version.artifact_path("onnx")
    try:
        actual = sha256_file(path)
    except FileNotFoundError:
        raise ModelFileMissing(f"The ONNX file of v{version.number} is no longer stored.") from None
    if actual != version.onnx_sha256:
        raise ModelFileMissing(
            f"The ONNX file of v{version.number} changed since it was trained (sha256 "
            f"{actual[:12]}…, recorded {version.onnx_sha256[:12]}…); it is not offered."
        )
    return OnnxDownload(path, f"{_base_name(version)}.onnx", actual)


def onnx_spec_download(*, version: ModelVersion) -> tuple[str, str]:
    """(filename, JSON text) of the preprocessing spec, with the model file's sha256 in it."""
    if not version.onnx_spec:
        raise ModelFileMissing(f"Model v{version.number} has no ONNX preprocessing spec.")
    spec = {**version.onnx_spec, "model_sha256": version.onnx_sha256}
    return f"{_base_name(version)}.onnx.json", json.dumps(spec, indent=2) + "\n"
