"""Approval and staged rollout of model versions: writes, reads and the guardrails.

Every stage or share change writes a ``RolloutEvent`` in the same transaction. Changes of one
project are serialized by a row lock on the project, so "at most one live and one limited
version" holds under concurrent requests (and a partial unique constraint backs it up).

Modules: errors, policy (steps and settings), moves (the locked stage change every
write goes through), guardrails, approval, stages (the plan and the move), rollback.
"""

from .approval import (
    ApprovalSummary,
    approval_summary,
    next_steps,
    version_approve,
    version_reject,
    version_shadow_unapproved,
)
from .errors import RolloutConflict, RolloutError
from .guardrails import (
    GUARDRAIL_WINDOW,
    MIN_GUARDRAIL_SAMPLE,
    Guardrail,
    GuardrailRates,
    guardrail_rates,
    guardrail_status,
    guardrail_window_start,
    guardrails_check,
    limited_versions_guard,
    version_guard,
)
from .moves import IN_ROLLOUT
from .policy import parse_rollout_steps, project_policy_update
from .rollback import RollbackPlan, project_rollback, rollback_plan
from .stages import (
    StagePlan,
    rollout_event_list,
    rollout_event_queryset,
    rollout_version_list,
    stage_change_plan,
    version_limited,
    version_live,
    version_stage_set,
)

__all__ = [
    "IN_ROLLOUT",
    "GUARDRAIL_WINDOW",
    "MIN_GUARDRAIL_SAMPLE",
    "ApprovalSummary",
    "Guardrail",
    "GuardrailRates",
    "RollbackPlan",
    "RolloutConflict",
    "RolloutError",
    "StagePlan",
    "approval_summary",
    "guardrail_rates",
    "guardrail_status",
    "guardrail_window_start",
    "guardrails_check",
    "limited_versions_guard",
    "next_steps",
    "parse_rollout_steps",
    "project_policy_update",
    "project_rollback",
    "rollback_plan",
    "rollout_event_list",
    "rollout_event_queryset",
    "rollout_version_list",
    "stage_change_plan",
    "version_approve",
    "version_guard",
    "version_live",
    "version_limited",
    "version_reject",
    "version_shadow_unapproved",
    "version_stage_set",
]
