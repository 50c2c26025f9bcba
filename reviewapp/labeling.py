"""Labeling new images with the model's help: suggestions, the Label queue's orders, claims.

A successful run scores every active unlabeled image of its project (``suggestions_score``);
images that arrive later are scored by the latest version in a background job. The Label
queue then offers them in the order a labeler picks, each card with the model's suggestion,
and claims the next cards for the labeler so two people never label the same ones.
"""

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Count, Exists, OuterRef, QuerySet
from django.utils import timezone

from trainer.suggest import DEFAULT_STRATEGY, STRATEGIES

from . import claims, services
from .models import Category, Image, ModelVersion, Project, QueueClaim, Suggestion

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "LabelQueue",
    "label_queue",
    "label_summary",
    "suggestion_counts",
    "suggestions_above",
    "suggestions_accept",
    "suggestions_refresh",
    "suggestions_score",
]

logger = logging.getLogger(__name__)

QUEUE = QueueClaim.Queue.LABEL
SCORE_CHUNK = 500
QUEUE_COUNT_CAP = 1000
ORDERS = {
    "uncertainty": ("margin", "id"),
    "diverse": ("diverse_rank", "id"),
    "confident": ("-confidence", "id"),
    "random": ("random_key", "id"),
}
assert set(ORDERS) == set(STRATEGIES)


def check_strategy(strategy: str | None) -> str:
    strategy = strategy or DEFAULT_STRATEGY
    if strategy not in STRATEGIES:
        raise ValidationError(
            {"strategy": f"No strategy '{strategy}'; use one of {', '.join(STRATEGIES)}."}
        )
    return strategy


def _unlabeled(project_id: int) -> QuerySet:
    return Image.objects.filter(
        project_id=project_id, status=Image.Status.ACTIVE, label__isnull=True
    )


def latest_version(project: Project) -> ModelVersion | None:
    return ModelVersion.objects.filter(project=project).order_by("-number").first()


# Scoring -------------------------------------------------------------------------------


def suggestions_score(*, version: ModelVersion, on_progress=None, should_stop=None) -> int:
    """Suggest a label for every active unlabeled image of the project that the version has
    not scored yet; then recompute the diverse order. Returns how many were scored."""
    from trainer.suggest import iter_suggestions

    rows = list(
        _unlabeled(version.project_id)
        .exclude(suggestions__version=version)
        .order_by("id")
        .values_list("id", "file")
    )
    if not rows:
        return 0
    if on_progress is not None:
        on_progress(0, len(rows))
    media = Path(settings.MEDIA_ROOT)
    categories = {c.name: c.pk for c in Category.objects.filter(project_id=version.project_id)}
    vocab = version.vocab
    scored = iter_suggestions(
        version.artifact_path(),
        [str(media / name) for _, name in rows],
        expected_sha256=version.export_sha256,
    )
    rng = random.Random(f"{version.pk}")
    batch: list[Suggestion] = []
    done = 0
    for (pk, _), item in zip(rows, scored, strict=True):
        batch.append(
            Suggestion(
                version=version,
                image_id=pk,
                predicted_id=categories.get(vocab[item.predicted]),
                confidence=item.confidence,
                margin=item.margin,
                entropy=item.entropy,
                probabilities=item.probabilities,
                embedding=np.asarray(item.embedding, dtype=np.float32).tobytes(),
                random_key=rng.getrandbits(62),
            )
        )
        if len(batch) >= SCORE_CHUNK:
            done += _flush(batch, on_progress, done, len(rows))
            if should_stop is not None and should_stop():
                return done
    done += _flush(batch, on_progress, done, len(rows))
    _diverse_order(version, new_images={pk for pk, _ in rows})
    return done


def _flush(batch: list[Suggestion], on_progress, done: int, total: int) -> int:
    n = len(batch)
    if n:
        Suggestion.objects.bulk_create(batch, batch_size=SCORE_CHUNK, ignore_conflicts=True)
        batch.clear()
        if on_progress is not None:
            on_progress(done + n, total)
    return n


def _diverse_order(version: ModelVersion, *, new_images: set[int]) -> None:
    """Clusters and diverse ranks of the version's open suggestions.

    After training every embedding is clustered afresh; images scored later join the
    nearest existing cluster, and the ranks are recomputed either way.
    """
    from trainer.suggest import diverse_ranks, nearest_cluster, ranks_from_clusters

    rows = list(
        Suggestion.objects.filter(version=version, image__label__isnull=True)
        .order_by("id")
        .values_list("id", "image_id", "margin", "embedding", "cluster")
    )
    if not rows:
        return
    ids = [r[0] for r in rows]
    margins = np.array([r[2] for r in rows])
    embeddings = np.stack([np.frombuffer(bytes(r[3]), dtype=np.float32) for r in rows])
    if version.suggestion_centres:
        clusters = np.array([r[4] for r in rows])
        new = np.array([r[1] in new_images for r in rows])
        if new.any():
            centres = np.asarray(version.suggestion_centres, dtype=np.float64)
            clusters[new] = nearest_cluster(embeddings[new], centres)
        ranks = ranks_from_clusters(clusters, margins)
    else:
        clusters, ranks, centres = diverse_ranks(embeddings, margins, seed=version.pk)
        version.suggestion_centres = np.round(centres, 5).tolist()
        ModelVersion.objects.filter(pk=version.pk).update(
            suggestion_centres=version.suggestion_centres
        )
    updates = [
        Suggestion(pk=pk, cluster=int(c), diverse_rank=int(r))
        for pk, c, r in zip(ids, clusters, ranks, strict=True)
    ]
    Suggestion.objects.bulk_update(updates, ["cluster", "diverse_rank"], batch_size=SCORE_CHUNK)


def suggestions_refresh(*, project_id: int) -> int:
    """The background job for images that arrived after the latest version was trained."""
    version = ModelVersion.objects.filter(project_id=project_id).order_by("-number").first()
    if version is None or not version.n_scored:
        return 0
    return suggestions_score(version=version)


# The queue -----------------------------------------------------------------------------


@dataclass
class LabelCard:
    image: Image
    suggestion: Suggestion | None
    claimed_by: str | None  # who holds the card now; None when nobody does


@dataclass
class LabelQueue:
    project: Project
    version: ModelVersion | None
    strategy: str
    cards: list[LabelCard]
    n_unlabeled: int
    n_suggested: int
    unlabeled_more: bool = False  # the counts stop at QUEUE_COUNT_CAP
    suggested_more: bool = False
    loaded_at: object = None  # when the cards were claimed
    claimed_by_others: list[tuple[str, int]] = field(default_factory=list)

    @property
    def claimed_elsewhere(self) -> int:
        return sum(n for _, n in self.claimed_by_others)


def _others_hold(user) -> Exists:
    return Exists(
        QueueClaim.objects.filter(
            queue=QUEUE, image_id=OuterRef("image_id"), expires_at__gt=timezone.now()
        ).exclude(user=user)
    )


def _ordered(project: Project, version: ModelVersion | None, strategy: str, user) -> QuerySet:
    """Open cards in the strategy's order, without those other people hold."""
    if version is None:
        # No model yet: upload order, no suggestions.
        held = Exists(
            QueueClaim.objects.filter(
                queue=QUEUE, image_id=OuterRef("pk"), expires_at__gt=timezone.now()
            ).exclude(user=user)
        )
        return _unlabeled(project.pk).filter(~held).order_by("id")
    return (
        Suggestion.objects.filter(
            version=version, image__status=Image.Status.ACTIVE, image__label__isnull=True
        )
        .filter(~_others_hold(user))
        .select_related("image", "predicted")
        .defer("embedding")  # 256 bytes a card that only the diverse order's clustering reads
        .order_by(*ORDERS[strategy])
    )


def label_queue(
    *,
    project: Project,
    user,
    strategy: str | None = None,
    offset: int = 0,
    limit=None,
    claim: int | None = None,
) -> LabelQueue:
    """The user's next cards in the strategy's order, without those others hold.

    The first page claims its first cards for the user (up to the project's claim size) and
    gives back those the user held but that are no longer first; later pages only list.
    """
    strategy = check_strategy(strategy)
    version = latest_version(project)
    if version is not None and not version.suggestions.exists():
        older = (
            ModelVersion.objects.filter(project=project, suggestions__isnull=False)
            .order_by("-number")
            .first()
        )
        version = older or version  # a version still scoring: the last one that did
    limit = limit or project.claim_size
    page = list(_ordered(project, version, strategy, user)[offset : offset + limit])
    # (suggestion or None, image) per card.
    rows = [(row, row.image) if version else (None, row) for row in page]
    mine: set[int] = set()
    if offset == 0:
        wanted = [image.pk for _, image in rows[: claim or project.claim_size]]
        mine = claims.claims_hold(project=project, user=user, queue=QUEUE, image_ids=wanted)
        # A card someone else took in the same instant is theirs: not shown.
        lost = set(wanted) - mine
        rows = [(s, image) for s, image in rows if image.pk not in lost]
    holder = user.get_username()
    cards = [
        LabelCard(image=image, suggestion=s, claimed_by=holder if image.pk in mine else None)
        for s, image in rows
    ]
    n_suggested, suggested_more = 0, False
    if version is not None:
        n_suggested, suggested_more = _capped_count(
            _unlabeled(project.pk).filter(suggestions__version=version)
        )
    n_unlabeled, unlabeled_more = _capped_count(_unlabeled(project.pk))
    return LabelQueue(
        project=project,
        version=version,
        strategy=strategy,
        cards=cards,
        n_unlabeled=n_unlabeled,
        unlabeled_more=unlabeled_more,
        n_suggested=n_suggested,
        suggested_more=suggested_more,
        loaded_at=timezone.now(),
        claimed_by_others=claims.claims_by_others(project=project, user=user, queue=QUEUE),
    )


def _capped_count(queryset: QuerySet) -> tuple[int, bool]:
    """Up to QUEUE_COUNT_CAP rows counted, and whether there are more: the queue page opens
    at the same speed with 1,000 or 100,000 unlabeled images (the project page is exact)."""
    # In the (project, status, label, ...) index's order: unordered, PostgreSQL's planner
    # walks every project's images by id to the first matches (25 ms at 100k).
    in_index_order = queryset.order_by("project_id", "status", "label_id", "split", "id")
    n = in_index_order[: QUEUE_COUNT_CAP + 1].count()
    return min(n, QUEUE_COUNT_CAP), n > QUEUE_COUNT_CAP


def label_summary(*, project: Project) -> dict:
    """Unlabeled images and how many have a suggestion: the project page's Label card."""
    version = (
        ModelVersion.objects.filter(project=project, suggestions__isnull=False)
        .order_by("-number")
        .first()
    )
    suggested = 0
    if version is not None:
        suggested = Suggestion.objects.filter(
            version=version, image__status=Image.Status.ACTIVE, image__label__isnull=True
        ).count()
    return {
        "unlabeled": _unlabeled(project.pk).count(),
        "suggested": suggested,
        "version": version,
    }


def suggestion_counts(version: ModelVersion) -> list[tuple[str, int]]:
    """Open suggestions per suggested class, for the version page."""
    rows = (
        Suggestion.objects.filter(
            version=version, image__status=Image.Status.ACTIVE, image__label__isnull=True
        )
        .values_list("predicted__name")
        .annotate(n=Count("id"))
        .order_by("-n", "predicted__name")
    )
    return [(name or "(a deleted class)", n) for name, n in rows]


# Accepting suggestions -----------------------------------------------------------------


def _open(version: ModelVersion) -> QuerySet:
    return Suggestion.objects.filter(
        version=version,
        image__status=Image.Status.ACTIVE,
        image__label__isnull=True,
        predicted__isnull=False,
    )


def suggestions_above(*, version: ModelVersion, min_confidence: float, sample: int = 8):
    """How many open suggestions are at or above ``min_confidence``, and a sample of them."""
    if not 0.0 <= min_confidence <= 1.0:
        raise ValidationError({"min_confidence": "The confidence must be between 0 and 1."})
    above = _open(version).filter(confidence__gte=min_confidence)
    count = above.count()
    shown = list(above.select_related("image", "predicted").order_by("confidence", "id")[:sample])
    return count, shown


def suggestions_accept(
    *,
    version: ModelVersion,
    actor,
    images: list[tuple[int, int]] | None = None,
    min_confidence: float | None = None,
) -> list[services.DecisionResult]:
    """Label images with their suggestion: the given (id, revision) pairs, or every open
    suggestion at or above ``min_confidence``. Each is a LabelEvent, applied or refused
    alone (a stale revision, an image labeled meanwhile)."""
    if (images is None) == (min_confidence is None):
        raise ValidationError("Give either the images or a minimum confidence.")
    if images is None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ValidationError({"min_confidence": "The confidence must be between 0 and 1."})
        rows = list(
            _open(version)
            .filter(confidence__gte=min_confidence)
            .order_by("-confidence", "id")
            .values_list("image_id", "image__revision", "predicted_id")
        )
        pairs = [(pk, rev) for pk, rev, _ in rows]
        predicted = {pk: cat for pk, _, cat in rows}
    else:
        pairs = images
        predicted = dict(
            Suggestion.objects.filter(
                version=version, image_id__in=[pk for pk, _ in images]
            ).values_list("image_id", "predicted_id")
        )
    labels = {c.pk: c for c in Category.objects.filter(project_id=version.project_id)}
    results = []
    for image_id, revision in pairs:
        category = labels.get(predicted.get(image_id))
        if category is None:
            results.append(
                services.DecisionResult(
                    image_id, False, "No suggestion from this version for this image.", None
                )
            )
            continue
        results.extend(
            services.images_decide(
                images=[(image_id, revision)],
                action="relabel",
                actor=actor,
                label=category,
                version=version,
            )
        )
    return results
