"""A backstage Sess's WSGI entry point (uWSGI's `wsgi-file`). Generated; edit the production file instead.

Before the app is imported it sets the environment from environment.json beside this file, byte for
byte (uWSGI never parses these values), and reads each secret from its file on the host: the content,
without one trailing newline. Then it imports the app, and makes Django's request and security errors
(a traceback, a DisallowedHost) reach this vassal's log, where `backstage apply` quotes them.
"""

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable


def _environment() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "environment.json"), encoding="ascii") as spec_file:
        spec = json.load(spec_file)
    for name, value in spec["env"].items():
        os.environ[name] = value
    for name, path in spec["secrets"].items():
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as secret:
            value = secret.read()
        os.environb[name.encode()] = value[:-1] if value.endswith(b"\n") else value
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        sys.dont_write_bytecode = True  # the interpreter read its own environment before this ran
    app: str = spec["app"]
    return app


def _report_django_errors() -> None:
    conf = sys.modules.get("django.conf")
    try:
        if conf is None or not conf.settings.configured or conf.settings.DEBUG:
            return  # no Django, or DEBUG, whose own console logging already says it
    except Exception:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.ERROR)
    handler.setFormatter(logging.Formatter("backstage: %(name)s: %(message)s"))
    for name in ("django.request", "django.security"):
        logging.getLogger(name).addHandler(handler)


def _load() -> Callable[..., Iterable[bytes]]:
    module, _, attribute = _environment().partition(":")
    app: Callable[..., Iterable[bytes]] = getattr(importlib.import_module(module), attribute)
    _report_django_errors()
    return app


application = _load()
