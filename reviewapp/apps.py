from django.apps import AppConfig


class ReviewappConfig(AppConfig):
    name = "reviewapp"
    verbose_name = "Loupe"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # The retraining policy's follow-ups listen to events, so training never imports it.
        from . import events, policy

        events.emitted.connect(policy.policy_followups, dispatch_uid="loupe-policy-after-run")
        # Web processes load a version the moment it starts serving (serving/warm.py).
        from .serving import warm

        events.emitted.connect(warm.warm_on_stage_change, dispatch_uid="loupe-warm-on-stage")
