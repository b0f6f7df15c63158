"""nginx: a generic token escaper for every `{{ }}`, and one escaper per slot with rules of its own."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .values import Escaped, Placeholder, UnsafeValue, Verbatim, plain

_BARE = re.compile(r"[A-Za-z0-9._~!*+,=:@/-]+")
# A DNS name as nginx's server_name takes it literally: no '~' (regex), '*' or '.' prefix (wildcards).
_HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")


def token(value: Any) -> str:
    """One nginx token: bare when it is plainly safe, double-quoted otherwise. Every `{{ }}` gets this."""
    if isinstance(value, Verbatim | Escaped | Placeholder):
        return str(value)
    text = plain(value, "nginx")
    if "$" in text:
        # nginx expands variables inside quotes too, and has no escape for '$'.
        raise UnsafeValue(f"nginx: '$' in {text!r}")
    if _BARE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def server_names(hosts: Iterable[str]) -> Escaped:
    """The arguments of `server_name`: literal host names only, never a regex, wildcard or `_`."""
    names = list(hosts)
    if not names:
        raise UnsafeValue("nginx: server_name needs at least one host name")
    for host in names:
        if not isinstance(host, str) or not _HOST_NAME.fullmatch(host):
            raise UnsafeValue(f"nginx: {host!r} is not a literal host name for server_name")
    return Escaped(" ".join(names))


def location(path: Any) -> Escaped:
    """A prefix location: starts with '/', so it is never a modifier (`=`, `~`) or a named location (`@`)."""
    text = plain(path, "nginx location")
    if not text.startswith("/"):
        raise UnsafeValue(f"nginx: location {text!r} does not start with '/'")
    return Escaped(token(text))


def prefix_regex(prefix: Any) -> Escaped:
    """A quoted regex matching a '/x/' prefix that captures the rest, '/' included: for `rewrite`."""
    text = plain(prefix, "nginx rewrite")
    if not (text.startswith("/") and text.endswith("/")):
        raise UnsafeValue(f"nginx: rewrite prefix {text!r} must start and end with '/'")
    return Escaped(token("^" + re.escape(text[:-1]) + "(/.*)"))


FILTERS = {"server_names": server_names, "location": location, "prefix_regex": prefix_regex}
