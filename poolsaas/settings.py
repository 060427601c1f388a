"""poolsaas settings: one module, every value from the environment (see .env.example).

With nothing set, the product runs on its embedded default: a SQLite file, an in-process
channel layer, tasks run inline and an embedded MQTT broker. Set DATABASE_URL, REDIS_URL
and MQTT_URL to run on PostgreSQL, Redis/Celery and Mosquitto.
"""

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from poolsaas.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("POOLSAAS_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)

# Development keys are public on purpose: they only exist while DEBUG is on.
_DEV_SECRET_KEY = "dev-only-insecure-key-poolsaas-never-use-in-production-0123456789"  # noqa: S105
_DEV_FIELD_KEY = "kYzjXz9Ybrck8T9-BGcC0V7EhDxyDOiBVDzBh6-2wns="

if DEBUG:
    SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET_KEY)
    FIELD_ENCRYPTION_KEY = env_list("FIELD_ENCRYPTION_KEYS", [_DEV_FIELD_KEY])
else:
    SECRET_KEY = env_str("SECRET_KEY")
    FIELD_ENCRYPTION_KEY = env_list("FIELD_ENCRYPTION_KEYS")
    if SECRET_KEY == _DEV_SECRET_KEY or _DEV_FIELD_KEY in FIELD_ENCRYPTION_KEY:
        raise ImproperlyConfigured(
            "The development keys cannot be used with DEBUG off."
        )
if not FIELD_ENCRYPTION_KEY:
    raise ImproperlyConfigured(
        "Set FIELD_ENCRYPTION_KEYS: comma-separated Fernet keys, newest first."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000")
# How many reverse proxies of ours stand in front of the web process, each appending
# to X-Forwarded-For. 0: the header is ignored (anyone could forge it).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "axes",
    "django_otp",
    "encrypted_model_fields",
    "tenants",
    "devices",
    "alerts",
    "telemetry",
    "audit",
    "billing",
    "gateway",
    "ota",
    "poolsaas",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "poolsaas.middleware.RequestIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): whether this session passed the second factor.
    "django_otp.middleware.OTPMiddleware",
    # Where each session is, for "where you're logged in"; then the 2FA requirement.
    "tenants.middleware.SessionTrackingMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "poolsaas.middleware.PermissionsPolicyMiddleware",
    "tenants.middleware.TenantMiddleware",
    # After the tenant is known: the 404 page renders with the user and tenant.
    "poolsaas.middleware.NotFoundPageMiddleware",
    # Last, so that it sees the outcome of every authentication attempt.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "poolsaas.urls"
ASGI_APPLICATION = "poolsaas.asgi.application"
WSGI_APPLICATION = None

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
                "tenants.context_processors.tenancy",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL and a busy timeout let the bridge and the web process share the file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL;",
        "transaction_mode": "IMMEDIATE",
    }
    # Tests get a file database too: Django's default, a shared-cache in-memory
    # database, answers SQLITE_LOCKED to a second writing thread (the bridge's writer,
    # a live server), which no busy timeout waits for. WAL and the timeout above do.
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(DATABASES["default"]["NAME"]).with_name("test.sqlite3"))
    }
# PostgreSQL connection pool per process (psycopg-pool); 0 opens a connection per
# request. ASGI runs sync views on many threads, where persistent connections pile up.
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 0)
if DB_POOL_MAX_SIZE and DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DB_POOL_MAX_SIZE,
        "timeout": 10,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "tenants.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation."
        "UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "pools"
LOGOUT_REDIRECT_URL = "login"

# Login throttling (django-axes): a username+address pair is locked out after a few
# failures; the lockout page says when to retry.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_USERNAME_FORM_FIELD = "username"
# Case and spaces do not make another account: one failure count per address.
AXES_USERNAME_CALLABLE = "tenants.views.axes_username"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "tenants.views.login_locked_out"
AXES_VERBOSE = False
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]

LANGUAGE_CODE = "en"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# Uploaded files (OTA releases): a folder by default, any storage backend in production.
MEDIA_ROOT = env_str("MEDIA_ROOT", str(VAR_DIR / "media"))
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "poolsaas <no-reply@poolsaas.test>")
INVITATION_TTL = timedelta(hours=env_int("INVITATION_TTL_HOURS", 72))

# Payments (billing.payments): Stripe, off while the key or the webhook secret is
# unset. STRIPE_API_BASE is for tests and proxies only.
STRIPE_API_KEY = env_str("STRIPE_API_KEY", "")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET", "")
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "https://api.stripe.com")

# The MQTT gateway (/mqtt): live sockets (client ids) per user across all web
# processes, topic filters per socket, how often a socket refreshes its slot and
# hands its usage to metering, and how long a slot counts without a refresh (a web
# process that died frees its users' slots after that).
GATEWAY_MAX_SOCKETS_PER_USER = env_int("GATEWAY_MAX_SOCKETS_PER_USER", 10)
GATEWAY_MAX_SUBSCRIPTIONS = env_int("GATEWAY_MAX_SUBSCRIPTIONS", 100)
GATEWAY_HEARTBEAT_SECONDS = env_int("GATEWAY_HEARTBEAT_SECONDS", 20)
GATEWAY_SOCKET_TTL = env_int("GATEWAY_SOCKET_TTL", 60)

# Redis, when set, carries the channel layer, Celery, throttling state and the cache.
REDIS_URL = env_str("REDIS_URL", "")
# Usage counters (billing.metering) in Redis; off only to measure what they cost.
USAGE_METERING = env_bool("USAGE_METERING", True)
if REDIS_URL:
    # "pubsub": channels-redis's pub/sub layer, bounded per socket and counted
    # (poolsaas/live/layer.py; docs/architecture.md, "The live path"), the default.
    # "core": channels-redis's list-per-process layer, which drops what overflows a
    # process's inbox under load (kept selectable, to compare).
    LIVE_CHANNEL_LAYER = env_str("LIVE_CHANNEL_LAYER", "pubsub")
    # redis-py 8 times out reads after 5 s by default, which breaks the layer's
    # blocking receive on an idle socket (channels_redis#422).
    _LAYER_HOSTS = [{"address": REDIS_URL, "socket_timeout": None}]
    if LIVE_CHANNEL_LAYER == "pubsub":
        _LAYER = {
            "BACKEND": "poolsaas.live.layer.LiveChannelLayer",
            "CONFIG": {
                "hosts": _LAYER_HOSTS,
                # Pub/sub channels are server-wide: named after the Redis database.
                "prefix": env_str(
                    "LIVE_CHANNEL_PREFIX",
                    "poolsaas.db%s." % (urlsplit(REDIS_URL).path.strip("/") or "0"),
                ),
                # Per socket: messages it may be behind before it is resynchronised.
                "capacity": env_int("LIVE_SOCKET_CAPACITY", 1000),
            },
        }
    elif LIVE_CHANNEL_LAYER == "core":
        _LAYER = {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": _LAYER_HOSTS, "capacity": 1000, "expiry": 30},
        }
    else:
        raise ImproperlyConfigured("LIVE_CHANNEL_LAYER must be pubsub or core.")
    CHANNEL_LAYERS = {"default": _LAYER}
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "poolsaas"),
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = False
    # One beat at a time, wherever several are started: RedBeat keeps the schedule
    # in Redis under a lock; another beat waits for the lock and takes over once it
    # lapses (the lock timeout, renewed at every tick of the holder).
    CELERY_BEAT_SCHEDULER = "redbeat.RedBeatScheduler"
    CELERY_REDBEAT_REDIS_URL = REDIS_URL
    CELERY_REDBEAT_KEY_PREFIX = env_str("REDBEAT_KEY_PREFIX", "redbeat:")
    CELERY_REDBEAT_LOCK_TIMEOUT = env_int("REDBEAT_LOCK_TIMEOUT", 60)
    CELERY_BEAT_MAX_LOOP_INTERVAL = 10
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # No server: tasks run inline, and beat hands its periodic tasks to a worker
    # through files (`make run` starts both).
    CELERY_BROKER_URL = "filesystem://"
    _CELERY_DIR = VAR_DIR / "celery"
    for _folder in ("queue", "processed"):
        (_CELERY_DIR / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_CELERY_DIR / "queue"),
        "data_folder_out": str(_CELERY_DIR / "queue"),
        "processed_folder": str(_CELERY_DIR / "processed"),
        "store_processed": False,
    }
    CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
# Workers log through LOGGING above (with the task id as request id), not Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"

# The platform MQTT broker. Unset: the embedded broker that `make run` starts.
MQTT_URL = env_str("MQTT_URL", "mqtt://127.0.0.1:1883")
MQTT_USERNAME = env_str("MQTT_USERNAME", "")
MQTT_PASSWORD = env_str("MQTT_PASSWORD", "")
# Mosquitto dynamic-security admin, used to create per-device clients.
MQTT_DYNSEC_ENABLED = env_bool("MQTT_DYNSEC_ENABLED", False)
# Where the admin reaches the plugin (deploy/mosquitto/start-dynsec.sh).
MQTT_DYNSEC_URL = env_str("MQTT_DYNSEC_URL", MQTT_URL)
# Bridges share the platform broker's subscriptions ($share), so that several can run
# side by side; off for a broker without them (the embedded one of `make run`).
MQTT_SHARED_SUBSCRIPTIONS = env_bool("MQTT_SHARED_SUBSCRIPTIONS", True)
# What operators watch (docs/operations.md). /api/ready waits this long for each
# service; /metrics needs `Authorization: Bearer METRICS_TOKEN` (unset: this host only).
READY_TIMEOUT = float(env_str("READY_TIMEOUT", "2"))
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# The bridge's /health, /ready and /metrics (devices.bridge.probes); port 0: off.
BRIDGE_HTTP_HOST = env_str("BRIDGE_HTTP_HOST", "127.0.0.1")
BRIDGE_HTTP_PORT = env_int("BRIDGE_HTTP_PORT", 9108)
# The bridge is not ready while its ingest lags more than this (seconds).
BRIDGE_READY_MAX_LAG = float(env_str("BRIDGE_READY_MAX_LAG", "10"))
# The bridge's threads live as long as its process, so each keeps its database
# connection this many seconds (DB_CONN_MAX_AGE is for the web process, where ASGI
# runs requests on short-lived threads); a pool (DB_POOL_MAX_SIZE) is used as it is.
BRIDGE_DB_CONN_MAX_AGE = env_int("BRIDGE_DB_CONN_MAX_AGE", 300)
# The MQTT rooms the bridge routes device topics to (devices.bridge.rooms): one per
# app that speaks MQTT, each a dotted path to a callable returning a Room.
BRIDGE_ROOMS = ["devices.mqtt.DevicesRoom", "ota.mqtt.OtaRoom"]
MQTT_PUBLIC_HOST = env_str("MQTT_PUBLIC_HOST", "127.0.0.1")
MQTT_PUBLIC_PORT = env_int("MQTT_PUBLIC_PORT", 1883)
MQTT_PUBLIC_TLS = env_bool("MQTT_PUBLIC_TLS", False)
# The factory key that claim codes on device labels are derived from
# (devices/services/claims.py). Empty: a key derived from SECRET_KEY, for development.
DEVICE_CLAIM_KEY = env_str("DEVICE_CLAIM_KEY", "")
# The secret OTA manifest keys are derived from (ota.services.device_ota_key; each
# device gets its own key in its provisioning bundle). Empty: derived from SECRET_KEY,
# for development. Changing it changes every device's key (re-provision them).
OTA_SECRET = env_str("OTA_SECRET", "")
# The bridge's OTA chunk budget (ota.mqtt), so that updates never starve telemetry:
# chunks per second in all and per device (a chunk is up to 4 KB).
OTA_CHUNKS_PER_S = env_int("OTA_CHUNKS_PER_S", 200)
OTA_DEVICE_CHUNKS_PER_S = env_int("OTA_DEVICE_CHUNKS_PER_S", 16)
# How long a Celery worker holds a campaign for its step (ota.services.steps); a
# dead worker's claim lapses after it. OTA_STEP_OFFER_DELAY_MS slows each offer
# (tests only: lets a test kill a worker in the middle of a step).
OTA_CLAIM_S = env_int("OTA_CLAIM_S", 55)
OTA_STEP_OFFER_DELAY_MS = env_int("OTA_STEP_OFFER_DELAY_MS", 0)
# Tenants' own brokers may point at loopback/private addresses only in development;
# in production that would let a tenant reach our internal network (SSRF).
BROKER_ALLOW_PRIVATE_HOSTS = env_bool("BROKER_ALLOW_PRIVATE_HOSTS", DEBUG)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "poolsaas.api.authentication.TenantJWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["poolsaas.api.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["poolsaas.api.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "poolsaas.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "poolsaas.api.errors.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "poolsaas.api.throttling.AnonThrottle",
        "poolsaas.api.throttling.UserThrottle",
        "poolsaas.api.throttling.TenantThrottle",
    ],
    # Token buckets, requests per minute; a tenant's plan overrides "tenant".
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_int("API_ANON_PER_MINUTE", 60),
        "user": env_int("API_USER_PER_MINUTE", 1200),
        "tenant": env_int("API_TENANT_PER_MINUTE", 600),
    },
}
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("JWT_ACCESS_MINUTES", 15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_DAYS", 7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "USER_ID_FIELD": "code",
    "USER_ID_CLAIM": "sub",
    # Tokens carry a digest of the password hash: a password change ends them all.
    "CHECK_REVOKE_TOKEN": True,
    "REVOKE_TOKEN_CLAIM": "pwd",
}
# Two-factor (tenants.TotpDevice on django-otp): each wrong code doubles the wait
# before the next try (1, 2, 4 ... seconds, times this factor).
OTP_TOTP_ISSUER = env_str("OTP_TOTP_ISSUER", "poolsaas")
OTP_TOTP_THROTTLE_FACTOR = env_int("OTP_THROTTLE_FACTOR", 1)
SPECTACULAR_SETTINGS = {
    "TITLE": "poolsaas API",
    "DESCRIPTION": "Pools, devices, telemetry and commands for integrators. Log in at "
    "POST /api/login and send the token as `Authorization: Bearer <token>`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # Swagger UI from drf-spectacular-sidecar: served by us, no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a `status`; the invoice's gets its own name.
    "ENUM_NAME_OVERRIDES": {
        "InvoiceStatusEnum": "billing.models.Invoice.Status",
        # Alerts and invoices both have a `kind`: each gets its own name.
        "AlertKindEnum": "alerts.models.Kind",
        "InvoiceKindEnum": "billing.models.Invoice.Kind",
        # Campaigns and their devices both have a `state` (and so do alerts).
        "CampaignStateEnum": "ota.models.Campaign.State",
        "DeviceUpdateStateEnum": "ota.models.DeviceUpdate.State",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "poolsaas.api.schema.add_error_responses",
    ],
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
if not DEBUG:
    # Behind a TLS-terminating proxy in production.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Content Security Policy (django-csp 4): scripts and styles come from our own static
# files only, so an injected <script>, on*= attribute or style= does not run. Pages
# render nothing inline (poolsaas/tests/test_security_headers.py checks every one).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        # Swagger UI and the admin draw small icons from data: URIs.
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        # 'self' covers ws:/wss: to the same host (CSP level 3).
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
# Browser features no page of ours uses, switched off for them and for any frame.
PERMISSIONS_POLICY = {
    feature: []
    for feature in (
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "screen-wake-lock",
        "serial",
        "usb",
        "xr-spatial-tracking",
    )
}
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
        }
    },
    # Every line carries its request id: a web request's, a task's, a command's.
    "filters": {"request_id": {"()": "poolsaas.request_context.RequestIdFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"axes": {"level": "WARNING"}, "daphne": {"level": "WARNING"}},
}
