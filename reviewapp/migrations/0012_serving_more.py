"""Serving additions."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("reviewapp", "0011_rollout_more"),
    ]

    operations = []
