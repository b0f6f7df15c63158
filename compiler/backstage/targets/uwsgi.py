"""uWSGI ini: a value escaper for every `{{ }}`, and slot escapers for option names and `env` lines.

uWSGI has no escapes: it strips values and expands %x, $(), @() and %() everywhere, so what cannot be
written literally is refused.
"""

from __future__ import annotations

import re
from typing import Any

from .values import Escaped, Placeholder, UnsafeValue, Verbatim, plain

_OPTION = re.compile(r"[a-z][a-z0-9-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def value(item: Any) -> str:
    """An ini value, read back by uWSGI as exactly `item`. Every `{{ }}` gets this."""
    if isinstance(item, Verbatim | Escaped | Placeholder):
        return str(item)
    if isinstance(item, bool):
        return "true" if item else "false"
    text = plain(item, "uwsgi")
    if "%" in text or "$(" in text or "@(" in text:
        raise UnsafeValue(f"uwsgi: expansion syntax in {text!r}")
    if text != text.strip():
        raise UnsafeValue(f"uwsgi: surrounding whitespace in {text!r}")
    return text


def option(name: Any) -> Escaped:
    """An option name on the left of '='."""
    text = plain(name, "uwsgi option")
    if not _OPTION.fullmatch(text):
        raise UnsafeValue(f"uwsgi: {text!r} is not an option name")
    return Escaped(text)


def env(pair: tuple[str, Any]) -> Escaped:
    """The value of an `env` option: NAME=VALUE, where NAME can hold no '='."""
    name, item = pair
    if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
        raise UnsafeValue(f"uwsgi: {name!r} is not an environment variable name")
    return Escaped(f"{name}={value(item)}")


FILTERS = {"option": option, "env": env}
