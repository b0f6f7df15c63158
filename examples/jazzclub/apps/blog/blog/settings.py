"""The jazzclub blog's settings (an example: backstage copies this code into its store)."""

import os

SECRET_KEY = os.environ.get("BLOG_SECRET_KEY", "example-only")
ALLOWED_HOSTS = os.environ.get("BACKSTAGE_HOSTS", "").split()
INSTALLED_APPS = ["django.contrib.staticfiles"]
ROOT_URLCONF = "blog.urls"
STATIC_URL = "static/"
STATIC_ROOT = os.environ.get("BACKSTAGE_STATIC_ROOT")  # backstage's collectstatic store path
