"""A project's rollout policy: its limited-rollout steps and approval settings."""

from django.db import transaction

from ..models import Project
from .errors import RolloutError

__all__ = ["POLICY_FIELDS", "parse_rollout_steps", "project_policy_update"]


def parse_rollout_steps(text: str) -> list[int]:
    """``"5,25,50,100"`` -> ``[5, 25, 50, 100]``: rising whole percents that end at 100."""
    parts = [p.strip().rstrip("%") for p in (text or "").split(",") if p.strip()]
    if not parts:
        raise RolloutError("Give the rollout steps as percents separated by commas, e.g. 5,25,100.")
    try:
        steps = [int(p) for p in parts]
    except ValueError:
        raise RolloutError(
            f"Rollout steps must be whole percents separated by commas, not '{text}'."
        ) from None
    if any(s < 1 or s > 100 for s in steps):
        raise RolloutError("Each rollout step is a percent from 1 to 100.")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise RolloutError("Rollout steps must rise, e.g. 5,25,50,100.")
    if steps[-1] != 100:
        raise RolloutError("The last rollout step must be 100: that is when a version goes live.")
    return steps


POLICY_FIELDS = (
    "review_confidence",
    "approval_coverage",
    "approval_tolerance",
    "rollout_steps",
    "max_shadow_disagreement",
    "max_override_rate",
    "max_low_confidence",
)


@transaction.atomic
def project_policy_update(*, project: Project, **fields) -> Project:
    """Change a project's approval and rollout policy (thresholds and steps)."""
    from ..services import project_update

    unknown = set(fields) - set(POLICY_FIELDS)
    if unknown:
        raise RolloutError(f"Not a rollout policy setting: {', '.join(sorted(unknown))}.")
    if "rollout_steps" in fields:
        fields["rollout_steps"] = ",".join(map(str, parse_rollout_steps(fields["rollout_steps"])))
    return project_update(project=project, **fields)
