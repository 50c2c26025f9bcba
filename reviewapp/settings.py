"""Loupe settings, read from the environment.

Embedded default: SQLite and an embedded Redis under ``var/``; production sets
``LOUPE_ENV=production``, ``SECRET_KEY``, ``DATABASE_URL`` and ``REDIS_URL``.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("LOUPE_VAR_DIR", BASE_DIR / "var")).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

LOUPE_ENV = os.environ.get("LOUPE_ENV", "development")
PRODUCTION = LOUPE_ENV == "production"


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


_MAKE_A_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(50))"'


def _secret_key() -> str:
    if key := os.environ.get("SECRET_KEY"):
        # Django's own rule (check --deploy, security.W009), refused here instead of warned.
        weak = len(key) < 50 or len(set(key)) < 5 or key.startswith("django-insecure-")
        if PRODUCTION and weak:
            raise ImproperlyConfigured(
                "SECRET_KEY is too weak for production (LOUPE_ENV=production): it needs at "
                "least 50 characters, 5 of them different, and no 'django-insecure-' prefix. "
                f"Make one with: {_MAKE_A_KEY}"
            )
        return key
    if PRODUCTION:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Production settings (LOUPE_ENV=production) need "
            "a SECRET_KEY environment variable shared by every web server and worker. "
            f"Make one with: {_MAKE_A_KEY}"
        )
    # Generated once and kept, so sessions survive restarts on a developer machine.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = _env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
    if h.strip()
]
if not PRODUCTION:
    ALLOWED_HOSTS.append("testserver")
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "ninja",
    "django_celery_beat",
    "axes",
    "reviewapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as axes asks: it turns a locked-out login's answer into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "reviewapp.urls"
WSGI_APPLICATION = "reviewapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: SQLite in WAL mode with a busy timeout, so the web server and the
# worker can write side by side; DATABASE_URL (PostgreSQL) in production.
SQLITE_PATH = VAR_DIR / "loupe.sqlite3"
if PRODUCTION and not os.environ.get("DATABASE_URL"):
    raise ImproperlyConfigured(
        "DATABASE_URL is required in production (LOUPE_ENV=production), e.g. "
        "postgres://loupe@db.example:5432/loupe"
    )
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{SQLITE_PATH}"), conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
            "PRAGMA busy_timeout=30000; PRAGMA foreign_keys=ON;"
        ),
    }
    # Tests run on a file in WAL mode too, not Django's in-memory shared cache: there a
    # writer that meets another connection's write fails at once ("database table is
    # locked") instead of waiting, which the live server and the worker threads of the
    # browser tests would hit at random.
    # One file per test process, so two test runs never share one.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns about a missing one
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
# Serve static files straight from the app folders outside production, so
# `make run` needs no collectstatic step.
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = DEBUG

MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media")).resolve()
MEDIA_URL = "/media/"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project-list"
LOGOUT_REDIRECT_URL = "login"

LOUPE_LOGIN_FAILURE_LIMIT = int(os.environ.get("LOUPE_LOGIN_FAILURE_LIMIT", 5))
LOUPE_LOGIN_COOLOFF_MINUTES = int(os.environ.get("LOUPE_LOGIN_COOLOFF_MINUTES", 15))
# Addresses from X-Forwarded-For are trusted only behind this many proxies that append to it.
LOUPE_TRUSTED_PROXY_COUNT = int(os.environ.get("LOUPE_TRUSTED_PROXY_COUNT", 0))

# Login throttling (django-axes): a (user name, address) pair is locked after the failure
# limit, for the cool-off; Bearer API tokens never go through authenticate() and are not.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = LOUPE_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOUPE_LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "reviewapp.views.login.login_lockout"
if LOUPE_TRUSTED_PROXY_COUNT:
    # Otherwise axes reads REMOTE_ADDR, which a client cannot forge.
    AXES_CLIENT_IP_CALLABLE = "reviewapp.views.login.login_client_ip"

# Production: HTTPS only. Each setting can be changed from the environment (same name).
SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
# loupe_run probes /healthz over plain http on 127.0.0.1; a redirect would fail the probe.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0))
# Off unless asked: both bind every subdomain, and a preload outlasts any later change.
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = _env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
# Behind a proxy that ends TLS, the request reaches Django as http; the proxy says https.
if _env_bool("LOUPE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Left off on purpose (above), so check --deploy need not warn that they are off.
SILENCED_SYSTEM_CHECKS = [
    *([] if SECURE_HSTS_INCLUDE_SUBDOMAINS else ["security.W005"]),
    *([] if SECURE_HSTS_PRELOAD else ["security.W021"]),
]

# Celery: the broker is REDIS_URL, or the embedded Redis started by `make run`.
EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis.sock"
REDIS_URL = os.environ.get("REDIS_URL") or f"redis+socket://{EMBEDDED_REDIS_SOCKET}"
USE_EMBEDDED_REDIS = not os.environ.get("REDIS_URL")
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A broker that restarts (Redis killed, a failover) is waited for, however long it takes;
# a worker that dies anyway is started again by loupe_run's supervisor.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Longer than the hard time limit of a training run, or Redis would redeliver it mid-run.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
CELERY_TASK_ALWAYS_EAGER = _env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Periodic jobs (reviewapp.periodic) live in the database: the admin shows and edits them.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Seconds between periodic jobs, as first written into the schedules by migrate.
LOUPE_POLICY_EVERY = int(os.environ.get("LOUPE_POLICY_EVERY", 300))
LOUPE_GUARDRAILS_EVERY = int(os.environ.get("LOUPE_GUARDRAILS_EVERY", 300))
LOUPE_REAP_EVERY = int(os.environ.get("LOUPE_REAP_EVERY", 300))
LOUPE_STAGING_CLEANUP_EVERY = int(os.environ.get("LOUPE_STAGING_CLEANUP_EVERY", 3600))
# The reaper: a job pending this long is sent again; after this many sends it fails.
LOUPE_PENDING_TIMEOUT = int(os.environ.get("LOUPE_PENDING_TIMEOUT", 600))
LOUPE_PENDING_MAX_SENDS = int(os.environ.get("LOUPE_PENDING_MAX_SENDS", 3))
LOUPE_UPLOAD_TIME_LIMIT = 3700  # upload_batch_process's hard time limit
LOUPE_STAGING_MAX_AGE = int(os.environ.get("LOUPE_STAGING_MAX_AGE", 24 * 3600))
# Training has its own queue, consumed by a worker with concurrency 1 and prefetch 1.
# Training and label audits (their prepare, fold and finishing jobs) go to the training queue.
CELERY_TASK_ROUTES = {
    f"reviewapp.tasks.{name}": {"queue": "training"}
    for name in (
        "training_run_process",
        "label_audit_start",
        "label_audit_fold",
        "label_audit_complete",
    )
}

# Training runs: a soft limit stops a run with a message; the hard one kills the process.
LOUPE_TRAINING_SOFT_TIME_LIMIT = int(os.environ.get("LOUPE_TRAINING_SOFT_TIME_LIMIT", 4 * 3600))
LOUPE_TRAINING_HARD_TIME_LIMIT = LOUPE_TRAINING_SOFT_TIME_LIMIT + 300
# A running run beats every few seconds; one silent for longer than the timeout is dead.
LOUPE_TRAINING_HEARTBEAT_SECONDS = float(os.environ.get("LOUPE_TRAINING_HEARTBEAT_SECONDS", 10))
LOUPE_TRAINING_HEARTBEAT_TIMEOUT = int(os.environ.get("LOUPE_TRAINING_HEARTBEAT_TIMEOUT", 120))
# Shadow versions answer when the web process is idle (off: within the request).
LOUPE_SHADOW_ASYNC = _env_bool("LOUPE_SHADOW_ASYNC", True)
# Every trained version is also exported to ONNX; versions whose export passed its parity
# check are served by ONNX Runtime ("auto"), unless LOUPE_SERVING_RUNTIME=torch.
LOUPE_ONNX_EXPORT = _env_bool("LOUPE_ONNX_EXPORT", True)
LOUPE_SERVING_RUNTIME = os.environ.get("LOUPE_SERVING_RUNTIME", "auto")
if LOUPE_SERVING_RUNTIME not in ("auto", "torch"):
    raise ImproperlyConfigured("LOUPE_SERVING_RUNTIME must be 'auto' or 'torch'.")
# Web processes load the serving versions at start and look for new ones this often.
LOUPE_WARM_POLL_SECONDS = float(os.environ.get("LOUPE_WARM_POLL_SECONDS", 2))
# GET /metrics (Prometheus) answers only a bearer of this token; unset, it answers 404.
LOUPE_METRICS_TOKEN = os.environ.get("LOUPE_METRICS_TOKEN", "")

# ImageNet weights: fetched from torchvision's URLs, or from a mirror holding the same file
# names; LOUPE_OFFLINE=1 never tries the network (import the files instead).
LOUPE_OFFLINE = _env_bool("LOUPE_OFFLINE", False)
LOUPE_WEIGHTS_URL = os.environ.get("LOUPE_WEIGHTS_URL", "")
LOUPE_WEIGHTS_TIMEOUT = float(os.environ.get("LOUPE_WEIGHTS_TIMEOUT", 30))

# Ingest limits: every uploaded or imported file is checked against these.
LOUPE_MAX_IMAGE_PIXELS = int(os.environ.get("LOUPE_MAX_IMAGE_PIXELS", 40_000_000))
LOUPE_MAX_FILE_BYTES = int(os.environ.get("LOUPE_MAX_FILE_BYTES", 25 * 1024 * 1024))
LOUPE_MAX_ZIP_BYTES = int(os.environ.get("LOUPE_MAX_ZIP_BYTES", 500 * 1024 * 1024))
LOUPE_MAX_ZIP_UNCOMPRESSED_BYTES = int(
    os.environ.get("LOUPE_MAX_ZIP_UNCOMPRESSED_BYTES", 2 * 1024 * 1024 * 1024)
)
LOUPE_MAX_ZIP_ENTRIES = int(os.environ.get("LOUPE_MAX_ZIP_ENTRIES", 10_000))
LOUPE_MAX_ZIP_RATIO = int(os.environ.get("LOUPE_MAX_ZIP_RATIO", 200))
LOUPE_THUMBNAIL_SIZE = 256
# Uploads above these go to a Celery task with a progress bar.
LOUPE_INLINE_UPLOAD_MAX_FILES = int(os.environ.get("LOUPE_INLINE_UPLOAD_MAX_FILES", 20))
LOUPE_INLINE_UPLOAD_MAX_BYTES = int(
    os.environ.get("LOUPE_INLINE_UPLOAD_MAX_BYTES", 10 * 1024 * 1024)
)

# Notifications: links in emails start with LOUPE_BASE_URL, the address people open Loupe at.
LOUPE_BASE_URL = os.environ.get("LOUPE_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
# Webhooks: each attempt ends within the timeout (seconds, however slowly the endpoint answers);
# a delivery is tried this many times with backoff, and after this many failed deliveries in a
# row the webhook is turned off. A webhook to LOUPE_BASE_URL's host and port is refused.
LOUPE_WEBHOOK_TIMEOUT = float(os.environ.get("LOUPE_WEBHOOK_TIMEOUT", 10))
LOUPE_WEBHOOK_MAX_ATTEMPTS = int(os.environ.get("LOUPE_WEBHOOK_MAX_ATTEMPTS", 5))
LOUPE_WEBHOOK_DISABLE_AFTER = int(os.environ.get("LOUPE_WEBHOOK_DISABLE_AFTER", 3))
# Email goes to the console unless the environment names a backend; EMAIL_HOST alone means SMTP,
# so a deployment that names its mail server is not left printing mail to a log.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend"
    if os.environ.get("EMAIL_HOST")
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", 25))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _env_bool("EMAIL_USE_SSL", False)
# Mail is sent from the request or task that notified: a dead server must not hold it long.
EMAIL_TIMEOUT = float(os.environ.get("EMAIL_TIMEOUT", 10))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Loupe <loupe@localhost>")

DATA_UPLOAD_MAX_NUMBER_FILES = 10_000
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
