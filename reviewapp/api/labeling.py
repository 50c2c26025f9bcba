"""The Label queue over the API: unlabeled images with their suggestions, in a chosen order.

Labels go through the decisions endpoints: ``relabel`` on an unlabeled image labels it, and
``accept_suggestion`` on the project's decisions accepts the suggestions in bulk.
"""

from ninja import Field, Query, Router, Schema

from .. import labeling
from .auth import require_perm
from .common import absolute_reverse, project_or_404
from .errors import ERROR_RESPONSES

__all__ = ["router"]

router = Router(tags=["labeling"])

MAX_LIMIT = 200
MAX_OFFSET = 100_000


class LabelQueueFilters(Schema):
    strategy: str = Field(
        labeling.DEFAULT_STRATEGY,
        description=f"One of {', '.join(labeling.STRATEGIES)}: uncertainty (smallest margin "
        "first), diverse (uncertain images spread over the embedding space), confident "
        "(most confident first) or random.",
    )
    limit: int = Field(20, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Follow ``next`` instead.")


class LabelCardOut(Schema):
    image_id: int
    suggested_label: str | None = Field(description="Null before a version has scored it.")
    confidence: float | None
    margin: float | None = Field(description="Top probability minus the second.")
    entropy: float | None
    probabilities: dict[str, float] | None = Field(description="Per class name.")
    claimed_by: str | None = Field(description="Who holds the card now: you, on page one.")
    revision: int = Field(description="Send it back with the label; stale: 409.")
    thumbnail_url: str | None


class LabelQueuePageOut(Schema):
    items: list[LabelCardOut]
    next: str | None = Field(description="URL of the next page; null on the last page.")
    version_id: int | None = Field(description="The version whose suggestions these are.")
    unlabeled: int = Field(description="Counted up to 1,000; see unlabeled_more.")
    suggested: int = Field(description="Counted up to 1,000; see suggested_more.")
    unlabeled_more: bool = Field(description="More unlabeled images than the count says.")
    suggested_more: bool
    claimed_by_others: dict[str, int] = Field(description="Cards others hold, per user.")


def _card_out(request, version, card) -> dict:
    s = card.suggestion
    return {
        "image_id": card.image.pk,
        "suggested_label": s.predicted.name if s and s.predicted_id else None,
        "confidence": s.confidence if s else None,
        "margin": s.margin if s else None,
        "entropy": s.entropy if s else None,
        "probabilities": dict(zip(version.vocab, s.probabilities, strict=False)) if s else None,
        "claimed_by": card.claimed_by,
        "revision": card.image.revision,
        "thumbnail_url": absolute_reverse(request, "image-thumbnail", pk=card.image.pk),
    }


@router.get(
    "/projects/{slug}/labeling-queue",
    response={200: LabelQueuePageOut, **ERROR_RESPONSES},
)
def labeling_queue(request, slug: str, filters: Query[LabelQueueFilters]):
    """The project's unlabeled images in the strategy's order, with the latest version's
    suggestion. The first page claims its first cards for you (the project's claim size),
    as the Label queue page does; cards other people hold are left out."""
    require_perm(request, "reviewapp.view_image", "view images")
    project = project_or_404(slug)
    queue = labeling.label_queue(
        project=project,
        user=request.auth,
        strategy=filters.strategy,
        offset=filters.offset,
        limit=filters.limit + 1,  # one more tells whether there is a next page
        claim=min(filters.limit, project.claim_size),
    )
    cards = queue.cards[: filters.limit]
    next_url = None
    end = filters.offset + filters.limit
    if len(queue.cards) > filters.limit and end <= MAX_OFFSET:
        query = request.GET.copy()
        query["offset"] = str(end)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {
        "items": [_card_out(request, queue.version, c) for c in cards],
        "next": next_url,
        "version_id": queue.version.pk if queue.version else None,
        "unlabeled": queue.n_unlabeled,
        "suggested": queue.n_suggested,
        "unlabeled_more": queue.unlabeled_more,
        "suggested_more": queue.suggested_more,
        "claimed_by_others": dict(queue.claimed_by_others),
    }
