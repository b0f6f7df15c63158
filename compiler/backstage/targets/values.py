"""What every target's escaping shares: the refusal, the two kinds of pre-escaped text, plain scalars."""

from __future__ import annotations

from typing import Any

from ..errors import CONTROL


class UnsafeValue(ValueError):
    """A value cannot be written into its slot so that the target reads back exactly that value."""


class Verbatim(str):
    """Text a template author wrote in the target syntax on purpose (a rendered fragment of a template);
    it is emitted unchanged. Never wrap a value that came from a production or was computed from one."""


class Placeholder(str):
    """A slot whose value is known only after rendering (a vassal's socket path holds the hash of the
    vassal's own text). It is written as its marker, which holds NUL: no escaped value can equal it,
    since every target refuses control characters. Each `{{ }}` is one chunk of Jinja2's output, so
    the slot is filled by replacing the chunk that equals the marker, never by searching text."""


class Escaped(str):
    """A value already escaped by the escaper of the slot it is written into (a template filter)."""


def plain(value: Any, target: str) -> str:
    """A scalar as text, refusing booleans (the template must spell them), containers and control characters."""
    if isinstance(value, bool):
        raise UnsafeValue(f"{target}: booleans must be spelled by the template, got {value!r}")
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise UnsafeValue(f"{target}: cannot interpolate {type(value).__name__}")
    if CONTROL.search(value):
        raise UnsafeValue(f"{target}: control character in {value!r}")
    return str(value)
