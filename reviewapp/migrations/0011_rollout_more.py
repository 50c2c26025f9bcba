"""Approval and rollout additions: at most one live and one limited version per project."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("reviewapp", "0010_label_issues"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="modelversion",
            constraint=models.UniqueConstraint(
                condition=models.Q(("stage__in", ["live", "limited"])),
                fields=("project", "stage"),
                name="version_one_live_one_limited",
            ),
        ),
    ]
