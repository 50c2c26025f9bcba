"""Out-of-fold scoring, rankings, duplicates and outliers (issue 6)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("reviewapp", "0009_rollout_serving"),
    ]

    operations = []
