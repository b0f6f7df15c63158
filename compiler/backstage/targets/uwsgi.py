"""uWSGI ini: a value escaper for every `{{ }}`, and a slot escaper for option names.

uWSGI has no escapes: it strips values and expands %x, $(), @() and %() everywhere, so what cannot be
written literally is refused. Environment values never pass through here: they reach the app through
its entry point's environment.json (targets/entry.py).
"""

from __future__ import annotations

import re
from typing import Any

from .values import Escaped, Placeholder, UnsafeValue, Verbatim, plain

_OPTION = re.compile(r"[a-z][a-z0-9-]*")


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


FILTERS = {"option": option}
