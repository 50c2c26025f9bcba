"""Claimed batches: a queue's next cards held by one person for a while.

Opening a queue claims its next cards for the user; working renews the claim; leaving or
a timeout releases it. Claims guide, they do not lock: a decision on another person's
claimed card still works and is recorded with who held it.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from .models import Project, QueueClaim

__all__ = [
    "QueueClaims",
    "claim_holder",
    "claims_by_others",
    "claims_hold",
    "claims_leave",
    "claims_leave_label_queue",
    "claims_now",
    "claims_release",
    "claims_renew",
    "claims_take",
    "held_by_others",
    "own_claims",
]


def _lifetime(project: Project) -> timedelta:
    return timedelta(minutes=project.claim_minutes)


def own_claims(*, project: Project, user, queue: str) -> list[int]:
    """Image ids the user holds in this queue now, oldest claim first."""
    return list(
        QueueClaim.objects.filter(
            project=project, queue=queue, user=user, expires_at__gt=timezone.now()
        )
        .order_by("claimed_at", "id")
        .values_list("image_id", flat=True)
    )


def claims_take(*, project: Project, user, queue: str, image_ids: Iterable[int]) -> list[int]:
    """Claim the given cards for the user where nobody else holds them; returns the ids the
    user holds afterwards among them. Two people taking at once each get distinct cards."""
    ids = list(image_ids)
    if not ids:
        return []
    now = timezone.now()
    expires = now + _lifetime(project)
    with transaction.atomic():
        # An expired claim is nobody's: clear them so the unique constraint lets others in.
        QueueClaim.objects.filter(queue=queue, image_id__in=ids, expires_at__lte=now).delete()
        QueueClaim.objects.bulk_create(
            [
                QueueClaim(
                    project=project,
                    image_id=i,
                    queue=queue,
                    user=user,
                    claimed_at=now,
                    expires_at=expires,
                )
                for i in ids
            ],
            ignore_conflicts=True,
        )
        # Cards already held are held afresh: a release sent by the page before stays old.
        renewed = QueueClaim.objects.filter(queue=queue, image_id__in=ids, user=user).update(
            claimed_at=now, expires_at=expires
        )
    if renewed == len(set(ids)):
        return ids  # every card is the user's: no need to read them back
    mine = set(
        QueueClaim.objects.filter(queue=queue, image_id__in=ids, user=user).values_list(
            "image_id", flat=True
        )
    )
    return [i for i in ids if i in mine]


def claims_renew(*, project: Project, user, queue: str) -> int:
    """Push back the expiry of the user's live claims: they are still working."""
    now = timezone.now()
    return QueueClaim.objects.filter(
        project=project, queue=queue, user=user, expires_at__gt=now
    ).update(expires_at=now + _lifetime(project))


def claims_release(
    *, project: Project, user, queue: str, image_ids=None, claimed_before=None
) -> int:
    """Give back the user's claims (all, the given cards, or those taken before a time):
    they left the queue. A page that goes away names the time it claimed its cards, so a
    release arriving after the next page claimed them again leaves those alone."""
    claims = QueueClaim.objects.filter(project=project, queue=queue, user=user)
    if image_ids is not None:
        claims = claims.filter(image_id__in=list(image_ids))
    if claimed_before is not None:
        claims = claims.filter(claimed_at__lte=claimed_before)
    return claims.delete()[0]


def claims_by_others(*, project: Project, user, queue: str) -> list[tuple[str, int]]:
    """(username, cards) of everyone else holding cards of this queue now."""
    rows = (
        QueueClaim.objects.filter(project=project, queue=queue, expires_at__gt=timezone.now())
        .exclude(user=user)
        .values_list("user__username")
        .annotate(n=Count("id"))
        .order_by("user__username")
    )
    return [(name, n) for name, n in rows]


def claim_holder(*, image_id: int, actor) -> object | None:
    """Someone other than ``actor`` who holds a live claim on the image, in any queue."""
    claim = (
        QueueClaim.objects.filter(image_id=image_id, expires_at__gt=timezone.now())
        .exclude(user=actor)
        .select_related("user")
        .first()
    )
    return claim.user if claim else None


def claims_hold(
    *, project: Project, user, queue: str, image_ids: Iterable[int], held=None
) -> set[int]:
    """The user's claims in this queue become these cards, where nobody else holds them:
    the cards held before but not wanted now go back. Returns the cards the user holds.
    ``held``: the user's live claims, when the caller has read them already."""
    wanted = list(image_ids)
    if held is None:
        held = own_claims(project=project, user=user, queue=queue)
    held = set(held)
    if held - set(wanted):
        claims_release(project=project, user=user, queue=queue, image_ids=held - set(wanted))
    if wanted and held == set(wanted):
        # The same cards again (a reload): held afresh in one statement.
        now = timezone.now()
        QueueClaim.objects.filter(queue=queue, image_id__in=wanted, user=user).update(
            claimed_at=now, expires_at=now + _lifetime(project)
        )
        return held
    return set(claims_take(project=project, user=user, queue=queue, image_ids=wanted))


@dataclass
class QueueClaims:
    """Who holds which cards of a queue now, from one read."""

    mine: list[int]  # image ids the user holds
    others: list[int]  # image ids anyone else holds: the queue leaves them out
    by_others: list[tuple[str, int]]  # (username, cards) of everyone else

    @property
    def claimed_elsewhere(self) -> int:
        return len(self.others)


def claims_now(*, project: Project, user, queue: str) -> QueueClaims:
    """Every live claim of the queue in one query on the (project, queue, expires_at) index:
    a few claim sizes at most, so a queue can leave the others' cards out by a literal list."""
    rows = QueueClaim.objects.filter(
        project=project, queue=queue, expires_at__gt=timezone.now()
    ).values_list("image_id", "user_id", "user__username")
    mine, others, counts = [], [], {}
    for image_id, user_id, name in rows:
        if user_id == user.pk:
            mine.append(image_id)
        else:
            others.append(image_id)
            counts[name] = counts.get(name, 0) + 1
    return QueueClaims(mine=mine, others=others, by_others=sorted(counts.items()))


def held_by_others(*, project: Project, user, queue: str) -> list[int]:
    """Image ids someone else holds in this queue now."""
    return claims_now(project=project, user=user, queue=queue).others


def claims_leave(*, image_id: int, queue: str) -> None:
    """The image is no longer a card of this queue: nobody holds it there."""
    QueueClaim.objects.filter(image_id=image_id, queue=queue).delete()


def claims_leave_label_queue(*, image_id: int) -> None:
    """A labeled or deleted image is no longer a Label queue card: nobody holds it."""
    claims_leave(image_id=image_id, queue=QueueClaim.Queue.LABEL)
