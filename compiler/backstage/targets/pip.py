"""pip requirements files: one requirement per line, never an option."""

from __future__ import annotations

from typing import Any

from .values import UnsafeValue, Verbatim, plain


def requirement(item: Any) -> str:
    """A line of requirements.txt. Every `{{ }}` gets this."""
    if isinstance(item, Verbatim):
        return str(item)
    text = plain(item, "pip")
    if text.startswith("-"):
        raise UnsafeValue(f"pip: option-like line {text!r}")
    return text


FILTERS: dict[str, object] = {}
