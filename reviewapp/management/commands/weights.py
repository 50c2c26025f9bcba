"""manage.py weights list | fetch ARCH | import FILE --arch ARCH: Loupe's ImageNet weights."""

import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from reviewapp import backbones
from trainer import ARCHITECTURES


def _size(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB"


class Command(BaseCommand):
    help = (
        "List, fetch or import the ImageNet weights that training fine-tunes from. They are "
        "kept under MEDIA_ROOT/weights, where every worker finds them."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="every supported architecture: present or not")
        fetch = sub.add_parser("fetch", help="download an architecture's weights")
        fetch.add_argument("architecture", choices=ARCHITECTURES)
        imported = sub.add_parser("import", help="check a weights file and store it")
        imported.add_argument("file", type=Path)
        imported.add_argument("--arch", required=True, choices=ARCHITECTURES, dest="architecture")

    def handle(self, *args, action, **options):
        getattr(self, f"_{action}")(**options)

    def _list(self, **options):
        rows = backbones.backbone_rows()
        width = max(len(row.architecture) for row in rows)
        for row in rows:
            w = row.weights
            if w is None:
                self.stdout.write(f"{row.architecture:<{width}}  missing  ({row.filename})")
            else:
                self.stdout.write(
                    f"{row.architecture:<{width}}  present  {w.filename}  {_size(w.size)}  "
                    f"sha256 {w.sha256}  {w.get_origin_display().lower()}: {w.source}"
                )

    def _fetch(self, *, architecture, **options):
        from trainer.weights import WeightsError

        source = settings.LOUPE_WEIGHTS_URL or "torchvision's URL"
        self.stderr.write(f"Fetching {architecture} weights from {source}...")
        started = time.monotonic()
        try:
            stored = backbones.backbone_fetch(architecture=architecture, on_progress=self._bar)
        except WeightsError as exc:
            raise CommandError(str(exc)) from None
        seconds = time.monotonic() - started
        self.stderr.write("")
        self.stdout.write(
            f"Stored {stored.filename} ({_size(stored.size)} in {seconds:.1f} s), "
            f"sha256 {stored.sha256}."
        )

    def _import(self, *, file, architecture, **options):
        if not file.is_file():
            raise CommandError(f"No file {file}.")
        try:
            stored = backbones.backbone_import(architecture=architecture, source=file)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(
            f"Imported {file} as {stored.filename} for {architecture} ({_size(stored.size)}), "
            f"sha256 {stored.sha256}."
        )

    def _bar(self, done: int, total: int) -> None:
        if sys.stderr.isatty() and total:
            self.stderr.write(f"\r{100 * done // total:3d}% of {_size(total)}", ending="")
