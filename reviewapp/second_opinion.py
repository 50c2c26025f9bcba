"""Second opinions: under a project's rule, a relabel waits until another reviewer agrees.

With ``Project.second_opinion`` on, relabeling a labeled image (review queue, image page,
bulk relabel, the API) does not change its label: it proposes the relabel, a pending
``SecondOpinion``. Another reviewer agrees (the relabel is applied through
``services.image_decide``, so a LabelEvent records it) or overrides (keeps the label, or
chooses another); the proposer may withdraw it. Every resolution locks the image row and
is refused, like a decision, when the image changed since the resolver saw it.
"""

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from . import services
from .models import Category, Image, LabelEvent, ModelVersion, Project, SecondOpinion

__all__ = [
    "ACTIONS",
    "AgreementRate",
    "DecisionOrProposal",
    "agreement_rate",
    "attach_pending",
    "image_decide_or_propose",
    "images_decide_or_propose",
    "pending_count",
    "pending_list",
    "second_opinion_agree",
    "second_opinion_override",
    "second_opinion_propose",
    "second_opinion_resolve",
    "second_opinion_withdraw",
]

Status = SecondOpinion.Status
ACTIONS = ("agree", "override", "withdraw")


def _locked_image(image_id: int) -> Image:
    try:
        # of=self: PostgreSQL cannot lock the nullable side of the label's outer join.
        return (
            Image.objects.select_for_update(of=("self",))
            .select_related("label", "project")
            .get(pk=image_id)
        )
    except Image.DoesNotExist:
        raise ValidationError(f"There is no image #{image_id}.") from None


def _check_revision(image: Image, revision: int) -> None:
    if image.revision != revision:
        last = image.events.select_related("actor").order_by("-id").first()
        raise services.StaleRevision(image, last)


def _name(user) -> str:
    return user.get_username() if user is not None else "a deleted user"


def _needs_second_opinion(image: Image, label: Category | None) -> bool:
    """The rule covers changing an existing label; a first label or a keep applies at once."""
    return (
        image.project.second_opinion
        and label is not None
        and image.label_id is not None
        and label.pk != image.label_id
        and image.status == Image.Status.ACTIVE
    )


# Proposing -----------------------------------------------------------------------------


@transaction.atomic
def second_opinion_propose(
    *,
    image_id: int,
    actor,
    revision: int,
    label: Category,
    version: ModelVersion | None = None,
    note: str = "",
) -> SecondOpinion:
    """Propose relabeling an image as ``label``; its label stays until another reviewer
    agrees. The proposer's own pending proposal is replaced; someone else's is refused."""
    image = _locked_image(image_id)
    _check_revision(image, revision)
    if label.project_id != image.project_id:
        raise ValidationError({"label": f"'{label.name}' is not a class of this project."})
    if image.status == Image.Status.DELETED:
        raise ValidationError("This image is in the trash; restore it before relabeling.")
    if image.label_id is None or label.pk == image.label_id:
        raise ValidationError("A second opinion is for changing a label the image already has.")
    pending = (
        SecondOpinion.objects.select_for_update(of=("self",))
        .select_related("proposed_by", "to_category")
        .filter(image=image, status=Status.PENDING)
        .first()
    )
    if pending is not None:
        if pending.proposed_by_id != actor.pk:
            raise ValidationError(
                f"Image #{image.pk} already waits for a second opinion: "
                f"{_name(pending.proposed_by)} proposed "
                f"'{pending.to_category.name if pending.to_category else '?'}'. "
                "Agree with it or override it in the Second opinion queue."
            )
        pending.to_category, pending.version, pending.note = label, version, note[:1000]
        pending.from_category = image.label
        pending.save(update_fields=["to_category", "version", "note", "from_category"])
        return pending
    return SecondOpinion.objects.create(
        project_id=image.project_id,
        image=image,
        proposed_by=actor,
        from_category=image.label,
        to_category=label,
        version=version,
        note=note[:1000],
    )


@transaction.atomic
def image_decide_or_propose(
    *,
    image_id: int,
    action: str,
    actor,
    revision: int,
    label: Category | None = None,
    version: ModelVersion | None = None,
    note: str = "",
) -> LabelEvent | SecondOpinion:
    """``services.image_decide``, except that under the project's second-opinion rule a
    relabel of a labeled image becomes a pending proposal (a SecondOpinion)."""
    if action == "relabel" and label is not None:
        image = _locked_image(image_id)
        if _needs_second_opinion(image, label):
            return second_opinion_propose(
                image_id=image_id,
                actor=actor,
                revision=revision,
                label=label,
                version=version,
                note=note,
            )
    return services.image_decide(
        image_id=image_id,
        action=action,
        actor=actor,
        revision=revision,
        label=label,
        version=version,
        note=note,
    )


@dataclass
class DecisionOrProposal(services.DecisionResult):
    opinion_id: int | None = None  # set when the relabel waits for a second opinion

    @property
    def proposed(self) -> bool:
        return self.opinion_id is not None


def images_decide_or_propose(
    *,
    images,
    action: str,
    actor,
    label: Category | None = None,
    version: ModelVersion | None = None,
) -> list[DecisionOrProposal]:
    """``services.images_decide`` under the second-opinion rule; each stands or fails alone."""
    results = []
    for image_id, revision in images:
        try:
            outcome = image_decide_or_propose(
                image_id=image_id,
                action=action,
                actor=actor,
                revision=revision,
                label=label,
                version=version,
            )
        except (services.StaleRevision, ValidationError) as exc:
            message = (
                str(exc) if isinstance(exc, services.StaleRevision) else " ".join(exc.messages)
            )
            results.append(DecisionOrProposal(image_id, False, message))
        else:
            if isinstance(outcome, SecondOpinion):
                results.append(
                    DecisionOrProposal(
                        image_id, True, "Waiting for a second opinion.", opinion_id=outcome.pk
                    )
                )
            else:
                results.append(DecisionOrProposal(image_id, True, event_id=outcome.pk))
    return results


# Resolving -----------------------------------------------------------------------------


def _locked_pending(opinion_id: int, revision: int | None) -> tuple[SecondOpinion, Image]:
    """The pending opinion and its image, both locked (image first, as decisions lock)."""
    image_id = (
        SecondOpinion.objects.filter(pk=opinion_id).values_list("image_id", flat=True).first()
    )
    if image_id is None:
        raise ValidationError(f"There is no second opinion #{opinion_id}.")
    image = _locked_image(image_id)
    opinion = (
        SecondOpinion.objects.select_for_update(of=("self",))
        .select_related("proposed_by", "resolved_by", "from_category", "to_category", "version")
        .get(pk=opinion_id)
    )
    if opinion.status != Status.PENDING:
        raise ValidationError(
            f"This second opinion is already {opinion.get_status_display().lower()}"
            f"{f' by {_name(opinion.resolved_by)}' if opinion.resolved_by_id else ''}."
        )
    if revision is not None:
        _check_revision(image, revision)
    return opinion, image


def _not_the_proposer(opinion: SecondOpinion, actor) -> None:
    if opinion.proposed_by_id is not None and opinion.proposed_by_id == actor.pk:
        raise ValidationError(
            "You proposed this relabel: another reviewer has to agree or override it. "
            "You can withdraw it instead."
        )


def _note(opinion: SecondOpinion, actor, what: str) -> str:
    return (
        f"second opinion #{opinion.pk}: relabel to "
        f"'{opinion.to_category.name if opinion.to_category else '?'}' proposed by "
        f"{_name(opinion.proposed_by)}, {what} by {_name(actor)}"
    )


def _resolve(opinion: SecondOpinion, status: str, actor, event=None) -> SecondOpinion:
    opinion.status, opinion.resolved_by, opinion.resolution = status, actor, event
    opinion.resolved_at = timezone.now()
    opinion.save(update_fields=["status", "resolved_by", "resolution", "resolved_at"])
    return opinion


@transaction.atomic
def second_opinion_agree(*, opinion_id: int, actor, revision: int) -> SecondOpinion:
    """Another reviewer agrees: the relabel is applied as their decision, naming both."""
    opinion, image = _locked_pending(opinion_id, revision)
    _not_the_proposer(opinion, actor)
    if opinion.to_category is None:
        raise ValidationError("The proposed class was deleted; override with another class.")
    event = services.image_decide(
        image_id=image.pk,
        action="relabel",
        actor=actor,
        revision=revision,
        label=opinion.to_category,
        version=opinion.version,
        note=_note(opinion, actor, "agreed"),
    )
    return _resolve(opinion, Status.AGREED, actor, event)


@transaction.atomic
def second_opinion_override(
    *, opinion_id: int, actor, revision: int, label: Category | None = None
) -> SecondOpinion:
    """Another reviewer overrides: keeps the image's label (``label`` None or the current
    one, recorded as their confirm) or relabels it as another class."""
    opinion, image = _locked_pending(opinion_id, revision)
    _not_the_proposer(opinion, actor)
    if label is not None and label.project_id != image.project_id:
        raise ValidationError({"label": f"'{label.name}' is not a class of this project."})
    if label is None or label.pk == image.label_id:
        event = None
        if image.status == Image.Status.ACTIVE and image.label_id is not None:
            kept = image.label.name
            event = services.image_decide(
                image_id=image.pk,
                action="confirm",
                actor=actor,
                revision=revision,
                version=opinion.version,
                note=_note(opinion, actor, f"overridden (kept '{kept}')"),
            )
        return _resolve(opinion, Status.OVERRIDDEN, actor, event)
    agreed = label.pk == opinion.to_category_id
    what = "agreed" if agreed else f"overridden (relabeled '{label.name}')"
    event = services.image_decide(
        image_id=image.pk,
        action="relabel",
        actor=actor,
        revision=revision,
        label=label,
        version=opinion.version,
        note=_note(opinion, actor, what),
    )
    return _resolve(opinion, Status.AGREED if agreed else Status.OVERRIDDEN, actor, event)


@transaction.atomic
def second_opinion_withdraw(*, opinion_id: int, actor) -> SecondOpinion:
    """The proposer takes the proposal back; the image keeps its label."""
    opinion, _ = _locked_pending(opinion_id, None)
    if opinion.proposed_by_id != actor.pk:
        raise ValidationError(
            f"Only {_name(opinion.proposed_by)}, who proposed it, can withdraw this relabel; "
            "agree with it or override it instead."
        )
    return _resolve(opinion, Status.WITHDRAWN, actor)


def second_opinion_resolve(
    *,
    opinion_id: int,
    actor,
    action: str,
    revision: int | None = None,
    label: Category | None = None,
) -> SecondOpinion:
    """Agree, override or withdraw, as the queue page and the API name them."""
    if action == "withdraw":
        return second_opinion_withdraw(opinion_id=opinion_id, actor=actor)
    if action not in ACTIONS:
        raise ValidationError(
            {"action": f"Unknown action '{action}'; use one of {', '.join(ACTIONS)}."}
        )
    if revision is None:
        raise ValidationError({"revision": "Send the image's revision as you saw it."})
    if action == "agree":
        if label is not None:
            raise ValidationError({"label": "Agree takes the proposed label; send none."})
        return second_opinion_agree(opinion_id=opinion_id, actor=actor, revision=revision)
    return second_opinion_override(
        opinion_id=opinion_id, actor=actor, revision=revision, label=label
    )


# Reads ---------------------------------------------------------------------------------


def pending_list(*, project: Project) -> QuerySet[SecondOpinion]:
    """The project's proposals waiting for a second reviewer, oldest first."""
    return (
        SecondOpinion.objects.filter(project=project, status=Status.PENDING)
        .select_related("image__label", "from_category", "to_category", "proposed_by", "version")
        .order_by("id")
    )


def pending_count(*, project: Project) -> int:
    """How many proposals wait: one count on the (project, status, id) index."""
    return SecondOpinion.objects.filter(project=project, status=Status.PENDING).count()


def attach_pending(images) -> None:
    """Set ``image.pending_opinion`` (or None) on each image, in one query for them all."""
    images = [image for image in images if image is not None]
    if not images:
        return
    pending = {
        o.image_id: o
        for o in SecondOpinion.objects.filter(
            image_id__in=[i.pk for i in images], status=Status.PENDING
        ).select_related("proposed_by", "to_category")
    }
    for image in images:
        image.pending_opinion = pending.get(image.pk)


@dataclass
class AgreementRate:
    agreed: int
    overridden: int
    pending: int

    @property
    def resolved(self) -> int:
        return self.agreed + self.overridden

    @property
    def rate(self) -> float | None:
        """Agreed of the resolved ones (withdrawn ones do not count); None before any."""
        return self.agreed / self.resolved if self.resolved else None


def agreement_rate(*, project: Project, version: ModelVersion | None = None) -> AgreementRate:
    """How often a second reviewer agreed, on the project or on one version's queue: one
    aggregate query."""
    qs = SecondOpinion.objects.filter(project=project)
    if version is not None:
        qs = qs.filter(version=version)
    counts = qs.aggregate(
        agreed=Count("id", filter=Q(status=Status.AGREED)),
        overridden=Count("id", filter=Q(status=Status.OVERRIDDEN)),
        pending=Count("id", filter=Q(status=Status.PENDING)),
    )
    return AgreementRate(**counts)
