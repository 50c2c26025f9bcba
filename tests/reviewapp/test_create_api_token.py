"""manage.py create_api_token --project SLUG --client NAME."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from reviewapp.models import ClientToken
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


def run(*args):
    out, err = StringIO(), StringIO()
    call_command("create_api_token", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_prints_the_token_once_and_stores_only_its_hash():
    project = ProjectFactory(slug="bears")

    out, err = run("--project", "bears", "--client", "shop")

    key = out.strip()
    assert key.startswith("lpc_") and "\n" not in key
    token = ClientToken.objects.get()
    assert token.project == project and token.client == "shop"
    assert token.key_hash == ClientToken.hash_key(key) and token.prefix == key[:8]
    assert "not shown again" in err and key not in err


def test_the_token_answers_the_predict_api_of_its_project(client):
    ProjectFactory(slug="bears")
    key = run("--project", "bears", "--client", "shop")[0].strip()

    # No image: the token is accepted and the request fails on its body, not with a 401.
    response = client.post(
        "/api/v1/projects/bears/predict", {}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 400


def test_an_unknown_project_is_an_error():
    with pytest.raises(CommandError, match="No project 'nope'"):
        run("--project", "nope", "--client", "shop")
    assert not ClientToken.objects.exists()


def test_a_blank_client_name_is_an_error():
    ProjectFactory(slug="bears")
    with pytest.raises(CommandError, match="Name the client"):
        run("--project", "bears", "--client", "   ")
    assert not ClientToken.objects.exists()
