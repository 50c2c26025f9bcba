"""Reviewers and approvers may start, follow and cancel training runs and read versions."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

TRAINING_PERMS = [
    "view_trainingrun",
    "add_trainingrun",
    "change_trainingrun",
    "view_modelversion",
    "view_imagescore",
]
GROUPS = ("reviewers", "approvers")


def grant(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    perms = Permission.objects.filter(
        content_type__app_label="reviewapp", codename__in=TRAINING_PERMS
    )
    for group in Group.objects.filter(name__in=GROUPS):
        group.permissions.add(*perms)


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    perms = Permission.objects.filter(
        content_type__app_label="reviewapp", codename__in=TRAINING_PERMS
    )
    for group in Group.objects.filter(name__in=GROUPS):
        group.permissions.remove(*perms)


class Migration(migrations.Migration):
    dependencies = [("reviewapp", "0003_training")]
    operations = [migrations.RunPython(grant, revoke)]
