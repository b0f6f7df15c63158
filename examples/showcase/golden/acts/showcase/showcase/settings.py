"""Settings of the showcase app: no database, no templates, configured from the environment.

backstage gives every Sess that serves Gigs BACKSTAGE_HOSTS, the space-separated domains of its Venues.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("SHOWCASE_SECRET_KEY", "showcase-dev-only-not-a-secret")
DEBUG = False
# A Sess without a Gig ("jamming in the garage") gets no BACKSTAGE_HOSTS: it still starts.
ALLOWED_HOSTS = [*os.environ.get("BACKSTAGE_HOSTS", "").split(), "localhost", "127.0.0.1"]

INSTALLED_APPS = ["django.contrib.staticfiles"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "showcase.urls"
WSGI_APPLICATION = "showcase.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
TEMPLATES: list[dict[str, object]] = []

USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Where collectstatic writes (and, for a manifest storage, what a running app reads): backstage's
# static store path when the Act has `[acts.NAME.django] collectstatic`.
STATIC_ROOT = os.environ.get("BACKSTAGE_STATIC_ROOT")

# Errors go to stderr, which is the vassal's logto file.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
