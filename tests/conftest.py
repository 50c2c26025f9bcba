import importlib

import pytest
from django.test import override_settings


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashing():
    """MD5 instead of PBKDF2's million rounds (0.6 s a user here); tests don't guard secrets."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def roles_after_flush(request):
    """The reviewers and approvers groups, back after a transactional test's flush.

    A flush empties the tables the data migrations filled; serialized_rollback would restore
    them but collides with the content types that the flush's post_migrate makes again.
    """
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        return
    request.getfixturevalue("transactional_db")
    from django.apps import apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Group, Permission

    if Group.objects.filter(name__in=["reviewers", "approvers"]).count() == 2:
        return
    # The migrations' own lists; their functions expect a migration's app registry.
    granted = importlib.import_module("reviewapp.migrations.0002_groups").GROUPS
    training = importlib.import_module("reviewapp.migrations.0004_training_permissions")
    for app_config in apps.get_app_configs():
        create_permissions(app_config, verbosity=0)
    for name, codenames in granted.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(
            *Permission.objects.filter(
                content_type__app_label="reviewapp",
                codename__in=[*codenames, *training.TRAINING_PERMS],
            )
        )
