"""Batchfetch settings, read from the environment (twelve-factor style).

Every knob a deployment turns is an environment variable; the defaults suit
local development (`make run`): SQLite under var/, Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from jobs.ops.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    """Read a boolean such as DJANGO_DEBUG=1 / true / yes / on."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", default=False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"
# Old keys during a rotation: signatures and sealed request headers made with them still open (jobs/crypto.py).
SECRET_KEY_FALLBACKS = env_list("DJANGO_SECRET_KEY_FALLBACKS", "")
# DJANGO_HTTPS=1: the site is served over TLS (usually by a proxy that sets
# X-Forwarded-Proto). Without it nothing below forces HTTPS, so plain HTTP on
# loopback (make run, tests) keeps working.
HTTPS = env_bool("DJANGO_HTTPS", default=False)
if HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", default=True)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    # daphne first: its runserver serves ASGI. `jobs` before `channels`: Django
    # picks the first app's command, and both ship a `runworker`.
    "daphne",
    "jobs",
    "channels",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    # First: /healthz, /readyz and /metrics answer before the host check and the HTTPS redirect (jobs/web/ops.py).
    "jobs.web.ops.OpsEndpointsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "jobs.web.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

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

# --- Database -----------------------------------------------------------------
VAR_DIR = Path(os.environ.get("BATCHFETCH_VAR_DIR", BASE_DIR / "var"))
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "0")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the worker write at once. WAL lets readers proceed
    # during a write, the busy timeout waits for the lock instead of failing, and
    # IMMEDIATE takes the write lock at BEGIN so two writers never deadlock on a
    # read-to-write upgrade ("database is locked").
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
    VAR_DIR.mkdir(parents=True, exist_ok=True)
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A connection pool (psycopg-pool, Django 5.1+): daphne runs every consumer's queries on new
    # connections otherwise (TCP, authentication, a backend fork), so 200 pages opening their sockets
    # at once queue for ~seconds behind those connects (bench/results.md). "auto": pooled when
    # psycopg_pool is installed and DATABASE_CONN_MAX_AGE is 0 (the two cannot be combined).
    _pool = os.environ.get("DATABASE_POOL", "auto").lower()
    if _pool not in ("auto", "0", "1"):
        raise ImproperlyConfigured(f"DATABASE_POOL must be auto, 0 or 1, not {_pool!r}")
    if _pool == "auto":
        from importlib.util import find_spec

        _pool = "1" if find_spec("psycopg_pool") is not None and not DATABASES["default"]["CONN_MAX_AGE"] else "0"
    if _pool == "1":
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": int(os.environ.get("DATABASE_POOL_MAX_SIZE", "10")),
        }
        # The pool then checks a connection as it hands it out (an empty query), so connections broken by
        # a database restart are replaced instead of failing one request each.
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis / Channels ------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # channels-redis waits for a message with BZPOPMIN for up to 5 s, and redis-py's default socket
        # timeout is 5 s too: every idle wait would then end in "Timeout reading" (closing an idle page's
        # socket with 1011). Sends have their own, shorter bounds (jobs/progress/groups.py).
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}], "prefix": "batchfetch"},
    }
}

# --- Auth, i18n, static ----------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# API clients get a JSON 403 on a CSRF failure; pages keep Django's.
CSRF_FAILURE_VIEW = "jobs.web.api_base.csrf_failure"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve from the finders when collectstatic has not run (development, tests).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("DJANGO_MAX_BODY_BYTES", str(50 * 1024 * 1024)))
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE

# --- Batchfetch ----------------------------------------------------------------
# The site's address as people reach it; `manage.py fetch` prints job pages under it.
if os.environ.get("BATCHFETCH_SITE_URL", "").strip():
    JOBS_SITE_URL = os.environ["BATCHFETCH_SITE_URL"].strip()
# Lifts the SSRF guard (loopback/private targets); development and tests only.
FETCH_ALLOW_PRIVATE_ADDRESSES = env_bool("FETCH_ALLOW_PRIVATE_ADDRESSES", default=False)
# CIDR lists: networks the guard always allows (e.g. an internal API) / always refuses.
FETCH_ALLOWED_NETWORKS = env_list("FETCH_ALLOWED_NETWORKS", "")
FETCH_DENIED_NETWORKS = env_list("FETCH_DENIED_NETWORKS", "")
# Per-host caps across all workers through Redis (README "Politeness across workers"); 0: per worker.
FETCH_SHARED_HOST_SLOTS = env_bool("FETCH_SHARED_HOST_SLOTS", default=True)
# Saved response bodies (job option save_bodies), through Django's default storage.
MEDIA_ROOT = Path(os.environ.get("BATCHFETCH_MEDIA_DIR", VAR_DIR / "media"))
WORKER_HEARTBEAT_SECONDS = float(os.environ.get("WORKER_HEARTBEAT_SECONDS", "10"))
WORKER_LEASE_SECONDS = float(os.environ.get("WORKER_LEASE_SECONDS", "30"))
WORKER_MAX_CLAIMS = int(os.environ.get("WORKER_MAX_CLAIMS", "5"))
WORKER_CHUNK_SIZE = int(os.environ.get("WORKER_CHUNK_SIZE", "500"))
# asyncio debug mode in the worker (also `runworker -v 3`): slow callbacks and never-awaited coroutines are logged.
WORKER_ASYNCIO_DEBUG = env_bool("BATCHFETCH_ASYNCIO_DEBUG", default=False)
WORKER_SLOW_CALLBACK_SECONDS = float(os.environ.get("WORKER_SLOW_CALLBACK_SECONDS", "0.1"))
# Abuse limits (jobs/submission/limits.py); a variable that is unset keeps the default in jobs/conf.py.
for _limit in ("JOBS_MAX_QUEUED_PER_USER", "JOBS_SUBMISSIONS_PER_MINUTE", "WS_MAX_MESSAGE_BYTES"):
    if os.environ.get(_limit, "").strip():
        globals()[_limit] = int(os.environ[_limit])
# Monitoring (jobs/monitoring/): the site's address for links in notifications, webhook timeout and retries.
MONITOR_SITE_URL = os.environ.get("MONITOR_SITE_URL", "")
for _seconds in ("MONITOR_WEBHOOK_TIMEOUT", "MONITOR_WEBHOOK_BACKOFF", "MONITOR_WEBHOOK_BACKOFF_CAP", "MONITOR_WEBHOOK_GIVE_UP"):
    if os.environ.get(_seconds, "").strip():
        globals()[_seconds] = float(os.environ[_seconds])
# Notification emails: Django's SMTP backend unless EMAIL_BACKEND says otherwise (tests use locmem).
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "batchfetch@localhost")

# Operations (README "Running it in production"): the bearer token of the web's /metrics (unset: no
# /metrics), and how many days finished jobs are kept (unset: forever; workers purge daily when set).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
if os.environ.get("JOBS_RETENTION_DAYS", "").strip():
    try:
        JOBS_RETENTION_DAYS = float(os.environ["JOBS_RETENTION_DAYS"])
    except ValueError:
        raise ImproperlyConfigured(f"JOBS_RETENTION_DAYS must be a number of days, not {os.environ['JOBS_RETENTION_DAYS']!r}") from None

# BATCHFETCH_LOG_FORMAT: text (human-readable, the default) or json (one object per line).
try:
    LOGGING = logging_config(
        log_format=os.environ.get("BATCHFETCH_LOG_FORMAT", "").strip().lower() or "text",
        level=os.environ.get("BATCHFETCH_LOG_LEVEL", "INFO"),
    )
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from None
