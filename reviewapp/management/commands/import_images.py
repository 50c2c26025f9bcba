"""Import a folder with one sub-folder per class (fastai's ``parent_label``)."""

import os
from collections import Counter
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from reviewapp.models import Image, Project
from reviewapp.services import (
    IngestResult,
    category_get_or_create,
    file_too_big,
    image_ingest,
    project_create,
)


def iter_files(root: Path):
    """Every regular file below ``root``, sorted, hidden files and folders skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if not filename.startswith("."):
                yield Path(dirpath) / filename


class Command(BaseCommand):
    help = (
        "Import images from DIR: each file's label is the name of its parent folder; "
        "files directly in DIR are imported unlabeled. Running it twice imports nothing new."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path)
        parser.add_argument("--project", required=True, help="The project's slug.")
        parser.add_argument(
            "--create", action="store_true", help="Create the project if it does not exist."
        )

    def handle(self, *args, directory: Path, project: str, create: bool, **options):
        root = directory.expanduser().resolve()
        if not root.is_dir():
            raise CommandError(f"{directory} is not a folder.")
        target = Project.objects.filter(slug=project).first()
        if target is None:
            if not create:
                raise CommandError(f"No project '{project}'. Add --create to make it.")
            target = project_create(name=project, slug=project)
            self.stdout.write(f"Created project '{target.slug}'.")

        files = list(iter_files(root))
        results: list[IngestResult] = []
        for path in tqdm(files, unit="img", desc="Importing", disable=None, file=self.stderr):
            results.append(self._import_one(target, root, path))

        counts = Counter(r.status for r in results)
        self.stdout.write(
            f"Imported {counts['imported']}, duplicates skipped {counts['duplicate']}, "
            f"rejected {counts['rejected']} (of {len(results)} files) into '{target.slug}'."
        )
        for result in results:
            if result.status == "rejected":
                self.stdout.write(f"  rejected {result.name}: {result.reason}")

    def _import_one(self, project: Project, root: Path, path: Path) -> IngestResult:
        name = str(path.relative_to(root))
        label = None
        if path.parent != root:
            try:
                label = category_get_or_create(project=project, name=path.parent.name)
            except ValidationError as exc:
                return IngestResult(name, "rejected", "; ".join(exc.messages))
        try:
            # Refused on its size alone, without reading it.
            if reason := file_too_big(path.stat().st_size):
                return IngestResult(name, "rejected", reason)
            data = path.read_bytes()
        except OSError as exc:
            return IngestResult(name, "rejected", f"cannot be read: {exc.strerror or exc}")
        return image_ingest(
            project=project, data=data, name=name, label=label, source=Image.Source.IMPORT
        )
