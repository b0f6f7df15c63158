"""Escaping for each generated format, applied by the renderer to every interpolated value.

Each function either returns text that the target parser reads back as exactly `value`, or raises
UnsafeValue. check() rejects such values first with a coded error; raising here is the second wall,
so a template can never emit a directive the production did not declare.
"""

from __future__ import annotations

import re
import shlex
from typing import Any


class UnsafeValue(ValueError):
    pass


class Verbatim(str):
    """Text a template author wrote in the target syntax on purpose; it is emitted unchanged."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NGINX_BARE = re.compile(r"[A-Za-z0-9._~!*+,=:@/-]+")


def _plain(value: Any, target: str) -> str:
    if isinstance(value, Verbatim):
        return str(value)
    if isinstance(value, bool):
        raise UnsafeValue(f"{target}: booleans must be spelled by the template, got {value!r}")
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise UnsafeValue(f"{target}: cannot interpolate {type(value).__name__}")
    if _CONTROL.search(value):
        raise UnsafeValue(f"{target}: control character in {value!r}")
    return value


def nginx(value: Any) -> str:
    """One nginx token: bare when it is plainly safe, double-quoted otherwise."""
    if isinstance(value, list | tuple):
        return " ".join(nginx(item) for item in value)
    if isinstance(value, Verbatim):
        return str(value)
    text = _plain(value, "nginx")
    if "$" in text:
        # nginx expands variables inside quotes too, and has no escape for '$'.
        raise UnsafeValue(f"nginx: '$' in {text!r}")
    if _NGINX_BARE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def nginx_prefix_regex(prefix: str) -> str:
    """A regex matching `prefix` (which ends in '/') that captures the rest, '/' included."""
    return "^" + re.escape(prefix[:-1]) + "(/.*)"


def uwsgi_ini(value: Any) -> str:
    """A uWSGI ini value. uWSGI has no escapes: it strips, expands %x, $(), @() and %() everywhere."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = _plain(value, "uwsgi")
    if "%" in text or "$(" in text or "@(" in text:
        raise UnsafeValue(f"uwsgi: expansion syntax in {text!r}")
    if text != text.strip():
        raise UnsafeValue(f"uwsgi: surrounding whitespace in {text!r}")
    return text


def shell(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(shell(item) for item in value)
    return shlex.quote(_plain(value, "sh"))


def text_line(value: Any) -> str:
    """A line of a line-oriented file (requirements.txt): one line, and never a pip option."""
    text = _plain(value, "text")
    if text.startswith("-"):
        raise UnsafeValue(f"text: option-like line {text!r}")
    return text
