"""The demo project: scikit-learn's bundled handwritten digits, with some labels flipped.

1,797 real 8x8 scans, shipped inside scikit-learn, so it works offline. A fixed,
seeded share (``DEMO_FLIP_SHARE``, 5%) of the labels is deliberately wrong so the
review loop has real errors to find; the list is written to
``MEDIA_ROOT/demo/digits-flipped.csv``.
"""

import csv
import io
import random
from pathlib import Path

from django.conf import settings
from django.db import transaction

from .models import Image, Project
from .services import category_create, image_ingest, project_create

__all__ = [
    "DEMO_FLIP_SHARE",
    "DEMO_SLUG",
    "demo_digits",
    "demo_project_create",
    "demo_project_fill",
]

DEMO_SLUG = "digits-demo"
DEMO_FLIP_SHARE = 0.05
DEMO_FLIP_SEED = 0
DEMO_PIXELS = 32


def demo_digits(*, flip_share: float = DEMO_FLIP_SHARE, seed: int = DEMO_FLIP_SEED):
    """Yield (png bytes, given label, true label) for every digit, flips included."""
    from PIL import Image as PILImage
    from sklearn.datasets import load_digits

    digits = load_digits()
    n = len(digits.target)
    rng = random.Random(seed)
    flipped = set(rng.sample(range(n), round(flip_share * n)))
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        true = str(int(target))
        given = true
        if index in flipped:
            given = rng.choice([str(d) for d in range(10) if str(d) != true])
        scan = PILImage.fromarray((pixels * (255 / 16)).astype("uint8"), mode="L")
        scan = scan.resize((DEMO_PIXELS, DEMO_PIXELS), PILImage.Resampling.BICUBIC)
        buffer = io.BytesIO()
        scan.save(buffer, "PNG")
        yield buffer.getvalue(), given, true


@transaction.atomic
def demo_project_create(*, actor=None) -> tuple[Project, bool]:
    """The demo project and whether it was created now (its images come from the fill)."""
    existing = Project.objects.filter(slug=DEMO_SLUG).first()
    if existing:
        return existing, False
    project = project_create(
        name="Handwritten digits (demo)",
        slug=DEMO_SLUG,
        actor=actor,
        description=(
            f"scikit-learn's 1,797 handwritten digits. {DEMO_FLIP_SHARE:.0%} of the "
            "labels were flipped on purpose (seeded): train a model, then find them "
            "in the review queue."
        ),
        image_size=64,
        resize_method=Project.ResizeMethod.SQUISH,
        augment=False,  # flipped or rotated digits change meaning
    )
    for digit in range(10):
        category_create(project=project, name=str(digit))
    return project, True


def demo_project_fill(*, project_id: int, on_progress=None) -> int:
    """Import the digits into the demo project; returns how many were imported."""
    project = Project.objects.get(pk=project_id)
    categories = {c.name: c for c in project.categories.all()}
    out_dir = Path(settings.MEDIA_ROOT) / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    imported = 0
    with (out_dir / "digits-flipped.csv").open("w", newline="") as flipped_file:
        writer = csv.writer(flipped_file)
        writer.writerow(["image_id", "given_label", "true_label"])
        for index, (data, given, true) in enumerate(demo_digits()):
            result = image_ingest(
                project=project,
                data=data,
                name=f"digit-{index:04d}.png",
                label=categories[given],
                source=Image.Source.IMPORT,
            )
            imported += result.status == "imported"
            if given != true:
                writer.writerow([result.image_id, given, true])
            if on_progress:
                on_progress(index + 1)
    return imported
