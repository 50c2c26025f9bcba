"""Settings come from the environment; production refuses to start half-configured."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.urls import reverse

ROOT = Path(__file__).resolve().parents[2]
STRONG_KEY = "k" * 40 + "0123456789"  # 50 characters, 11 different: strong enough


def load_settings(tmp_path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DATABASE_URL"}}
    clean.update(LOUPE_VAR_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings;"
         "print(settings.SECRET_KEY[:6], settings.DATABASES['default']['ENGINE'])"],
        cwd=ROOT, env=clean, capture_output=True, text=True,
    )  # fmt: skip


def test_production_refuses_to_start_without_secret_key(tmp_path):
    result = load_settings(tmp_path, LOUPE_ENV="production")

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_production_refuses_to_start_without_database_url(tmp_path):
    result = load_settings(tmp_path, LOUPE_ENV="production", SECRET_KEY=STRONG_KEY)

    assert result.returncode != 0
    assert "DATABASE_URL is required" in result.stderr


@pytest.mark.parametrize("key", ["x", "x" * 50, "abcd" * 20, "django-insecure-" + "k9" * 30])
def test_production_refuses_a_weak_secret_key_and_says_how_to_make_one(tmp_path, key):
    result = load_settings(tmp_path, LOUPE_ENV="production", SECRET_KEY=key)

    assert result.returncode != 0
    assert "SECRET_KEY is too weak" in result.stderr
    assert 'python -c "import secrets; print(secrets.token_urlsafe(50))"' in result.stderr


def test_readme_production_example_passes_check_deploy(tmp_path):
    """The environment of README's Production example, against a real PostgreSQL URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "DJANGO_DEBUG"))}
    env.update(
        LOUPE_VAR_DIR=str(tmp_path),
        LOUPE_ENV="production",
        SECRET_KEY=STRONG_KEY,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/test",
        REDIS_URL="redis://127.0.0.1:6379/15",
        ALLOWED_HOSTS="loupe.example.com",
        CSRF_TRUSTED_ORIGINS="https://loupe.example.com",
        LOUPE_PROXY_SSL_HEADER="1",
        LOUPE_TRUSTED_PROXY_COUNT="1",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_defaults_are_https_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "DJANGO_DEBUG"))}
    env.update(
        LOUPE_VAR_DIR=str(tmp_path),
        LOUPE_ENV="production",
        SECRET_KEY=STRONG_KEY,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/test",
        LOUPE_PROXY_SSL_HEADER="1",
        SECURE_HSTS_SECONDS="60",
    )
    names = (
        "SECURE_SSL_REDIRECT SECURE_REDIRECT_EXEMPT SECURE_HSTS_SECONDS "
        "SECURE_HSTS_INCLUDE_SUBDOMAINS SECURE_HSTS_PRELOAD SESSION_COOKIE_SECURE "
        "CSRF_COOKIE_SECURE SECURE_PROXY_SSL_HEADER"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings;"
         f"print([getattr(settings, n) for n in {names.split()!r}])"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    assert out.strip() == str(
        [True, [r"^healthz$"], 60, False, False, True, True, ("HTTP_X_FORWARDED_PROTO", "https")]
    )


def test_development_generates_the_secret_key_once(tmp_path):
    first = load_settings(tmp_path)
    second = load_settings(tmp_path)

    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert "sqlite3" in first.stdout


@pytest.mark.django_db
def test_sqlite_runs_in_wal_mode_with_a_busy_timeout():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == 30000
        cursor.execute("PRAGMA journal_mode")
        # The in-memory test database cannot use WAL; a file database does.
        assert cursor.fetchone()[0] in {"wal", "memory"}


def test_file_database_uses_wal(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["LOUPE_VAR_DIR"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.db import connection;"
         "c = connection.cursor(); c.execute('PRAGMA journal_mode'); print(c.fetchone()[0])"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.strip() == "wal"


@pytest.mark.django_db
def test_migration_creates_reviewer_and_approver_groups():
    reviewers = set(
        Group.objects.get(name="reviewers").permissions.values_list("codename", flat=True)
    )
    approvers = set(
        Group.objects.get(name="approvers").permissions.values_list("codename", flat=True)
    )

    assert {"view_project", "add_image", "change_image", "add_category"} <= reviewers
    assert "approve_model" not in reviewers and "add_project" not in reviewers
    assert reviewers < approvers and {"approve_model", "add_project"} <= approvers


@pytest.mark.django_db
def test_ssl_redirect_spares_healthz_for_the_plain_http_probe(settings, client):
    settings.SECURE_SSL_REDIRECT = True

    assert client.get(reverse("login")).status_code == 301
    assert client.get("/healthz").status_code != 301
