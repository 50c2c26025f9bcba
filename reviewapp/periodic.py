"""The periodic jobs Celery beat runs (schedules in the database, django-celery-beat), and
``tick``, which runs them all once inline for ``manage.py loupe_tick``, scripts and tests."""

import logging
from dataclasses import dataclass, field

from . import audits, policy, reaper, rollout, training, webhooks

__all__ = ["PERIODIC_TASKS", "TickReport", "tick"]

logger = logging.getLogger(__name__)

# Task name -> (schedule name in the admin, seconds between runs, the setting that sets it).
PERIODIC_TASKS = {
    "reviewapp.tasks.periodic_policy_check": ("Loupe: retraining policy", "LOUPE_POLICY_EVERY"),
    "reviewapp.tasks.periodic_guardrails": ("Loupe: rollout guardrails", "LOUPE_GUARDRAILS_EVERY"),
    "reviewapp.tasks.periodic_reap": ("Loupe: reap lost and dead jobs", "LOUPE_REAP_EVERY"),
    "reviewapp.tasks.periodic_staging_cleanup": (
        "Loupe: clean up abandoned upload staging",
        "LOUPE_STAGING_CLEANUP_EVERY",
    ),
}


@dataclass
class TickReport:
    runs_started: list = field(default_factory=list)
    paused: list = field(default_factory=list)
    reaped: reaper.ReapReport = field(default_factory=reaper.ReapReport)
    staging_removed: list[str] = field(default_factory=list)
    deliveries_sent: int = 0
    runs_run: list = field(default_factory=list)  # with --run: the runs, finished
    audits_run: list = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [
            f"Policy: started run #{r.pk} of {r.project.slug} ({r.reason})"
            for r in self.runs_started
        ]
        lines += [f"Guardrails: paused {v} ({v.paused_reason})" for v in self.paused]
        lines += [f"Reaper: sent {what} again" for what in self.reaped.resent]
        lines += [f"Reaper: marked {what} failed" for what in self.reaped.failed]
        lines += [f"Staging: removed {name}" for name in self.staging_removed]
        if self.deliveries_sent:
            lines.append(f"Webhooks: {self.deliveries_sent} deliveries attempted")
        lines += [f"Run #{r.pk}: {r.status} {r.error_message}".rstrip() for r in self.runs_run]
        lines += [f"Audit #{a.pk}: {a.status} {a.error_message}".rstrip() for a in self.audits_run]
        return lines or ["Nothing to do."]


def tick(*, run: bool = False) -> TickReport:
    """Every periodic job once, then the webhook deliveries still waiting.

    With ``run`` the training runs (and their follow-up audits) the policy starts are
    executed here, in this process, instead of queued for workers.
    """
    report = TickReport()
    report.reaped = reaper.pending_jobs_reap()
    report.paused = rollout.limited_versions_guard()
    report.runs_started = policy.policy_check(enqueue=not run)
    if run:
        for started in report.runs_started:
            with policy.inline_followups() as followups:
                training.training_run_execute(run_id=started.pk, worker="loupe_tick")
            for audit_id in followups.audits:
                report.audits_run.append(audits.label_audit_run_inline(audit_id=audit_id))
            started.refresh_from_db()
            report.runs_run.append(started)
    report.staging_removed = reaper.staging_cleanup()
    # A bounded batch: each hanging endpoint may hold the tick for its timeout.
    report.deliveries_sent = webhooks.deliveries_send_due(limit=50)
    return report
