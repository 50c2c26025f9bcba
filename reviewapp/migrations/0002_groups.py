"""The `reviewers` and `approvers` groups with their permissions."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

REVIEWER_PERMS = [
    "view_project",
    "view_category",
    "add_category",
    "change_category",
    "view_image",
    "add_image",
    "change_image",
    "view_labelevent",
    "add_labelevent",
    "view_uploadbatch",
    "add_uploadbatch",
]
APPROVER_PERMS = REVIEWER_PERMS + [
    "add_project",
    "change_project",
    "delete_category",
    "approve_model",
]
GROUPS = {"reviewers": REVIEWER_PERMS, "approvers": APPROVER_PERMS}


def create_groups(apps, schema_editor):
    # Permissions are normally made after migrate; make them now so we can assign them.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        perms = Permission.objects.filter(
            content_type__app_label="reviewapp", codename__in=codenames
        )
        group.permissions.add(*perms)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("reviewapp", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_groups, remove_groups)]
