"""Import a folder with one sub-folder per class (fastai's ``parent_label``)."""

import hashlib
import os
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from reviewapp.imaging import DecodedImage, ImageRejected
from reviewapp.models import Image, Project
from reviewapp.services import (
    IngestResult,
    category_get_or_create,
    file_too_big,
    image_decode,
    image_ingest,
    project_create,
    suggestions_later,
)

# Two threads keep both cores busy decoding; more only add memory on small machines.
IMPORT_THREADS = min(4, os.cpu_count() or 1)


@dataclass
class _Prepared:
    data: bytes = b""
    sha256: str = ""
    decoded: DecodedImage | ImageRejected | None = None
    reason: str = ""


def _bounded_map(pool: ThreadPoolExecutor, fn, items, ahead: int = 2 * IMPORT_THREADS):
    """``pool.map`` that keeps at most ``ahead`` results in memory, in order."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


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
        self.known = set(target.images.values_list("sha256", flat=True))
        self.categories: dict[str, object] = {}
        results: list[IngestResult] = []
        progress = tqdm(
            total=len(files), unit="img", desc="Importing", disable=None, file=self.stderr
        )
        # Reading, hashing and decoding run in threads (Pillow releases the GIL); the
        # database and storage writes stay in this thread, in file order.
        with ThreadPoolExecutor(max_workers=IMPORT_THREADS) as pool:
            for path, prepared in zip(files, _bounded_map(pool, self._prepare, files), strict=True):
                results.append(self._import_one(target, root, path, prepared))
                progress.update()
        progress.close()

        counts = Counter(r.status for r in results)
        if any(r.status == "imported" and not r.label for r in results):
            suggestions_later(project=target)  # loose files: the latest version suggests
        self.stdout.write(
            f"Imported {counts['imported']}, duplicates skipped {counts['duplicate']}, "
            f"rejected {counts['rejected']} (of {len(results)} files) into '{target.slug}'."
        )
        for result in results:
            if result.status == "rejected":
                self.stdout.write(f"  rejected {result.name}: {result.reason}")

    def _prepare(self, path: Path) -> _Prepared:
        """Read, hash and decode one file; runs in a worker thread, touches no database."""
        try:
            # Refused on its size alone, without reading it.
            if reason := file_too_big(path.stat().st_size):
                return _Prepared(reason=reason)
            data = path.read_bytes()
        except OSError as exc:
            return _Prepared(reason=f"cannot be read: {exc.strerror or exc}")
        sha256 = hashlib.sha256(data).hexdigest()
        if sha256 in self.known:
            return _Prepared(data=data, sha256=sha256)  # a duplicate: no need to decode
        try:
            decoded = image_decode(data)
        except ImageRejected as exc:
            decoded = exc
        return _Prepared(data=data, sha256=sha256, decoded=decoded)

    def _category(self, project: Project, name: str):
        if name not in self.categories:
            self.categories[name] = category_get_or_create(project=project, name=name)
        return self.categories[name]

    def _import_one(
        self, project: Project, root: Path, path: Path, prepared: _Prepared
    ) -> IngestResult:
        name = str(path.relative_to(root))
        label = None
        if path.parent != root:
            try:
                label = self._category(project, path.parent.name)
            except ValidationError as exc:
                return IngestResult(name, "rejected", "; ".join(exc.messages))
        if prepared.reason:
            return IngestResult(name, "rejected", prepared.reason)
        result = image_ingest(
            project=project,
            data=prepared.data,
            name=name,
            label=label,
            source=Image.Source.IMPORT,
            sha256=prepared.sha256,
            decoded=prepared.decoded,
        )
        self.known.add(prepared.sha256)
        return result
