"""A run's files under the media root: where they go, and their removal with the run."""

import shutil
from pathlib import Path

from django.conf import settings

from ..models import ModelVersion, TrainingRun


def output_dir(run_pk: int, project_id: int) -> Path:
    return Path(settings.MEDIA_ROOT) / "models" / str(project_id) / f"run-{run_pk}"


def relative(path: Path) -> str:
    return str(Path(path).resolve().relative_to(Path(settings.MEDIA_ROOT).resolve()))


def discard(run: TrainingRun) -> None:
    """Remove what an unfinished run made: its files, and a version still being scored."""
    ModelVersion.objects.filter(run_id=run.pk).delete()
    shutil.rmtree(output_dir(run.pk, run.project_id), ignore_errors=True)
