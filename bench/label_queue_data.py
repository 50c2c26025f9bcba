"""The Label queue's data for bench/review_latency.py: unlabeled images with suggestions.

Bulk-created, no files (thumbnails are only URLs): ``n`` active unlabeled images, one model
version that suggests a class for each (margin, confidence, entropy, a 64-d embedding, the
diverse rank and cluster as ``reviewapp.labeling`` stores them), and the next cards of the
diverse order claimed by another labeler, so every request skips them as the page does.
"""

import math
import random
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

CLASSES = ("cat", "dog", "fox", "owl")
BATCH_SIZE = 5000
EMBEDDING_DIM = 64
CLUSTERS = 20
CLAIMED_BY_OTHER = 20  # the other labeler's batch, at the head of the diverse order


@dataclass
class LabelFixture:
    project: object
    version: object
    rows: int
    claimed_by_other: int


def _suggestion(rng: random.Random, k: int) -> tuple[int, list[float]]:
    """A predicted class and probabilities: mostly confident, a long tail of unsure ones."""
    predicted = rng.randrange(k)
    top = 1 / k + (1 - 1 / k) * rng.betavariate(2.0, 0.8)
    rest = [rng.expovariate(1.0) for _ in range(k - 1)]
    whole = sum(rest)
    probabilities = [(1 - top) * r / whole for r in rest]
    probabilities.insert(predicted, top)
    # Keep the predicted class the largest, as argmax would.
    probabilities = [min(p, top) for p in probabilities]
    total = sum(probabilities)
    return predicted, [round(p / total, 5) for p in probabilities]


def fill_label_queue(n: int, other_user, seed: int) -> LabelFixture:
    from django.db import transaction
    from django.utils import timezone

    from reviewapp.models import Category, Image, ModelVersion, Project, QueueClaim, Suggestion

    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    now = timezone.now()
    with transaction.atomic():
        project = Project.objects.create(name=f"Label bench {n}", slug=f"label-bench-{n}")
        categories = [
            Category.objects.create(project=project, name=name, position=i, hotkey=str(i + 1))
            for i, name in enumerate(CLASSES)
        ]
        version = ModelVersion.objects.create(
            project=project,
            number=1,
            stage=ModelVersion.Stage.CANDIDATE,
            export_file=f"models/{project.pk}/v1/export.pkl",
            export_sha256="0" * 64,
            weights_file=f"models/{project.pk}/v1/weights.pth",
            weights_sha256="0" * 64,
            config={"architecture": "resnet18", "epochs": 3, "image_size": 224},
            vocab=list(CLASSES),
            metrics={"accuracy": 0.9, "error_rate": 0.1},
            n_scored=1000,
            suggestion_centres=np_rng.normal(size=(CLUSTERS, EMBEDDING_DIM)).round(5).tolist(),
        )
        images = []
        for i in range(n):
            sha = f"{n:08x}{i:048x}{seed:08x}"
            images.append(
                Image(
                    project_id=project.pk,
                    file=f"images/{project.pk}/{sha[:2]}/{sha}.jpg",
                    thumbnail=f"thumbs/{project.pk}/{sha[:2]}/{sha}.jpg",
                    sha256=sha,
                    original_name=f"new-{i:06d}.jpg",
                    width=640,
                    height=480,
                    format="JPEG",
                    label_id=None,
                    split=project.split_for(sha),
                    source=Image.Source.UPLOAD,
                )
            )
        Image.objects.bulk_create(images, batch_size=BATCH_SIZE)
        suggestions = []
        for image in images:
            predicted, probabilities = _suggestion(rng, len(CLASSES))
            ordered = sorted(probabilities, reverse=True)
            suggestions.append(
                Suggestion(
                    version_id=version.pk,
                    image_id=image.pk,
                    predicted_id=categories[predicted].pk,
                    confidence=ordered[0],
                    margin=ordered[0] - ordered[1],
                    entropy=-sum(p * math.log(p) for p in probabilities if p > 0),
                    probabilities=probabilities,
                    embedding=np_rng.normal(size=EMBEDDING_DIM).astype(np.float32).tobytes(),
                    cluster=rng.randrange(CLUSTERS),
                    random_key=rng.getrandbits(62),
                )
            )
        # The diverse order as ranks_from_clusters leaves it: a permutation of the rows.
        for rank, j in enumerate(np_rng.permutation(n)):
            suggestions[j].diverse_rank = int(rank)
        Suggestion.objects.bulk_create(suggestions, batch_size=BATCH_SIZE)
        head = sorted(suggestions, key=lambda s: (s.diverse_rank, s.image_id))[:CLAIMED_BY_OTHER]
        QueueClaim.objects.bulk_create(
            QueueClaim(
                project=project,
                image_id=s.image_id,
                queue=QueueClaim.Queue.LABEL,
                user=other_user,
                claimed_at=now,
                # Far ahead: the other labeler keeps them for the whole measurement.
                expires_at=now + timedelta(days=1),
            )
            for s in head
        )
    return LabelFixture(project=project, version=version, rows=n, claimed_by_other=len(head))
