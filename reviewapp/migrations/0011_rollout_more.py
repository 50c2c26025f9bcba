"""Approval and rollout additions."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("reviewapp", "0010_label_issues"),
    ]

    operations = []
