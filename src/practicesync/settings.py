"""Settings come from the environment; the embedded default needs none of it.

PRACTICESYNC_HOME  folder for the embedded SQLite database and generated secret (default ./var)
DATABASE_URL       any dj-database-url URL; default SQLite (WAL) in PRACTICESYNC_HOME
SECRET_KEY         default: generated once and kept in PRACTICESYNC_HOME/secret_key
DEBUG              "1"/"true" to turn on; off otherwise
ALLOWED_HOSTS      comma-separated; default 127.0.0.1,localhost
PRACTICESYNC_HTTPS "1" behind HTTPS: secure cookies, HSTS (PRACTICESYNC_HTTPS_REDIRECT too)
PRACTICESYNC_TASKS_REDIS_URL  redis://host:6379/0 to queue tasks in Redis (deploy/README.md)
PRACTICESYNC_SQLITE_PRAGMAS   extra "PRAGMA ...;" statements run on each embedded SQLite
                   connection, after the defaults (tests simulate a full disk with max_page_count
                   and a read-only database with query_only through it)
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url

HOME = Path(os.environ.get("PRACTICESYNC_HOME", "var")).resolve()
BASE_DIR = Path(__file__).resolve().parent


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _secret_key() -> str:
    if key := os.environ.get("SECRET_KEY"):
        return key
    HOME.mkdir(parents=True, exist_ok=True)
    path = HOME / "secret_key"
    if not path.exists():
        # Written once with owner-only permissions so restarts keep sessions valid.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = _flag("DEBUG")
ALLOWED_HOSTS = [
    h.strip() for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "axes",
    "django_htmx",
    # Serves the API docs' Swagger UI from our own static files (no CDN, works offline).
    "ninja",
    "django_tasks",
    "django_tasks_db",
    "practicesync.practices",
    "practicesync.accounts",
    "practicesync.patients",
    "practicesync.audit",
    "practicesync.results",
    "practicesync.outreach",
    "practicesync.appointments",
    "practicesync.dashboard",
    "practicesync.api",
    "practicesync.runtime",
    "practicesync.connectors.hl7v2",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every response; the policy is CONTENT_SECURITY_POLICY below.
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # Admins must pass two-step login before any page (docs/adr/0014).
    "practicesync.accounts.middleware.MFARequiredMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # First, so a locked-out address never reaches the password check.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "practicesync.urls"
WSGI_APPLICATION = "practicesync.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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


def _database() -> dict:
    url = os.environ.get("DATABASE_URL")
    if url:
        config = dj_database_url.parse(url, conn_max_age=60)
        if config["ENGINE"] == "django.db.backends.postgresql":
            # Django's own backend, except that error text never holds a row's values.
            config["ENGINE"] = "practicesync.runtime.postgresql"
            # The server notices a vanished client in about two minutes (not the system's two
            # hours), and lets go of its locks: a practice's sync lock (runtime/locks.py).
            config.setdefault("OPTIONS", {}).setdefault(
                "options", "-c tcp_keepalives_idle=60 -c tcp_keepalives_interval=10 "
                           "-c tcp_keepalives_count=6")
        return config
    HOME.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(HOME / "practicesync.sqlite3"),
        # WAL lets the web server read while the worker writes; IMMEDIATE avoids
        # lock-upgrade deadlocks between the two processes. A 64 MB page cache (the default
        # is 2 MB) keeps the indexes of a 100,000-row sync or tick in memory.
        "OPTIONS": {
            "init_command": ("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                             "PRAGMA cache_size=-65536; "
                             + os.environ.get("PRACTICESYNC_SQLITE_PRAGMAS", "")),
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
# Opt-in (the "redis" extra): tasks queue in Redis and `practicesync worker` runs them with
# RQ. The database stays the source of truth; Redis only carries the queue and task results.
if _redis_url := os.environ.get("PRACTICESYNC_TASKS_REDIS_URL", "").strip():
    INSTALLED_APPS.append("django_rq")
    TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}}
    # The database worker has no time limit; an hour is far above a 100,000-row sync and
    # still frees a worker from a task that hangs.
    RQ_QUEUES = {"default": {"URL": _redis_url, "DEFAULT_TIMEOUT": 3600}}

# Argon2 first (memory-hard); PBKDF2 kept so older hashes still verify and get upgraded.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = HOME / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Bulk messages are held (fail closed) when the practice's last full patient sync is older.
PRACTICESYNC_BULK_SYNC_MAX_AGE = timedelta(hours=float(os.environ.get(
    "PRACTICESYNC_BULK_SYNC_MAX_AGE_HOURS", "36")))
# A bulk to more patients than this needs a second staff member's approval; only the first
# batch goes out until staff release the rest (DESIGN.md section 2, bulk-send rails).
PRACTICESYNC_BULK_APPROVAL_OVER = int(os.environ.get("PRACTICESYNC_BULK_APPROVAL_OVER", "50"))
PRACTICESYNC_BULK_FIRST_BATCH = int(os.environ.get("PRACTICESYNC_BULK_FIRST_BATCH", "10"))

# Practice PCs are shared: a session ends after two idle hours (each request renews it).
SESSION_COOKIE_AGE = 2 * 60 * 60
SESSION_SAVE_EVERY_REQUEST = True
# Behind HTTPS (any real deployment), cookies go over HTTPS only and browsers are told to
# use nothing else. Off by default so `make demo` works on http://127.0.0.1.
if _flag("PRACTICESYNC_HTTPS"):
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 365 * 24 * 60 * 60
    SECURE_SSL_REDIRECT = _flag("PRACTICESYNC_HTTPS_REDIRECT")
    # The TLS-terminating proxy says the request came over HTTPS.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Browser security headers (docs/adr/0016-csp-append-only-audit-redis.md) ---------------
# Scripts, styles and everything else only from this site's own static files: no inline
# script, no on*= handler, no style= attribute (tests/test_security.py greps the templates).
# base-uri, form-action and frame-ancestors do not fall back to default-src, so they are set.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "object-src": ["'none'"],
    },
}
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

# PHI never goes to logs: loggers below only carry ids, counts and run status.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    # Django logs every 404 with its path, and paths carry PMS ids and searches.
    "loggers": {"django.request": {"level": "ERROR"}},
}

# --- Channel providers (outreach/channels/, docs/adr/0012-channel-providers.md) -------------
# PRACTICESYNC_SMS_PROVIDER    outbox | twilio     (default outbox: nothing leaves the machine)
# PRACTICESYNC_EMAIL_PROVIDER  outbox | django     (django: EMAIL_BACKEND, SMTP or anymail)
# PRACTICESYNC_PUSH_PROVIDER   outbox | webpush
# TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM (number or Messaging Service SID "MG..."),
# TWILIO_STATUS_CALLBACK_URL (https://<host>/webhooks/twilio/status), TWILIO_API_BASE (tests)
# PRACTICESYNC_EMAIL_FROM; EMAIL_BACKEND, EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER,
# EMAIL_HOST_PASSWORD, EMAIL_USE_TLS, EMAIL_USE_SSL, EMAIL_TIMEOUT; ANYMAIL_* for the ESP
# VAPID_PRIVATE_KEY (default: generated into PRACTICESYNC_HOME), VAPID_SUBJECT (mailto:/https:)
_PROVIDER_CLASSES = {
    "sms": {"twilio": "practicesync.outreach.channels.twilio_sms.TwilioSmsProvider"},
    "email": {"django": "practicesync.outreach.channels.email.EmailProvider"},
    "push": {"webpush": "practicesync.outreach.channels.webpush.WebPushProvider"},
}


def _providers(env) -> dict:
    providers = {}
    for channel, choices in _PROVIDER_CLASSES.items():
        choices = {"outbox": "practicesync.outreach.channels.outbox.OutboxProvider", **choices}
        name = env.get(f"PRACTICESYNC_{channel.upper()}_PROVIDER", "").strip().lower() or "outbox"
        if name not in choices:
            # A typo must not quietly fall back to the outbox and send nothing.
            raise ValueError(f"PRACTICESYNC_{channel.upper()}_PROVIDER={name!r}: use one of "
                             f"{', '.join(choices)}")
        providers[channel] = choices[name]
    return providers


PRACTICESYNC_PROVIDERS = _providers(os.environ)

TWILIO_ACCOUNT_SID = os.environ.get("TWILIO_ACCOUNT_SID", "")
TWILIO_AUTH_TOKEN = os.environ.get("TWILIO_AUTH_TOKEN", "")
TWILIO_FROM = os.environ.get("TWILIO_FROM", "")
TWILIO_STATUS_CALLBACK_URL = os.environ.get("TWILIO_STATUS_CALLBACK_URL", "")
TWILIO_API_BASE = os.environ.get("TWILIO_API_BASE", "")

PRACTICESYNC_EMAIL_FROM = os.environ.get("PRACTICESYNC_EMAIL_FROM", "practicesync@localhost")
# HL7 inbox: refused frames kept per practice per hour; beyond it they are only counted.
PRACTICESYNC_DEAD_LETTER_CAP = int(os.environ.get("PRACTICESYNC_DEAD_LETTER_CAP", "1000"))
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _flag("EMAIL_USE_TLS")
EMAIL_USE_SSL = _flag("EMAIL_USE_SSL")
# Django waits forever by default; a hung mail server would hold the worker.
EMAIL_TIMEOUT = int(os.environ.get("EMAIL_TIMEOUT", "30"))
# ANYMAIL_MAILGUN_API_KEY=... becomes ANYMAIL["MAILGUN_API_KEY"].
ANYMAIL = {k.removeprefix("ANYMAIL_"): v for k, v in os.environ.items() if k.startswith("ANYMAIL_")}

VAPID_PRIVATE_KEY = os.environ.get("VAPID_PRIVATE_KEY", "")
VAPID_SUBJECT = os.environ.get("VAPID_SUBJECT", "") or f"mailto:{PRACTICESYNC_EMAIL_FROM}"

# --- Login lockout (django-axes; docs/adr/0014-staff-login-and-mfa.md) ---------------------
# Five wrong passwords or MFA codes in a row for one email from one address pause that pair
# for 15 minutes (each attempt while paused restarts the wait); others are not held up.
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
# axes keeps the POST of each failed attempt: mask the MFA code as it masks the password.
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "code"]
# The name authenticator apps show next to the staff member's email.
OTP_TOTP_ISSUER = "practicesync"
