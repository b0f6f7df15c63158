"""POSIX sh: every `{{ }}` is one quoted word (a list is several)."""

from __future__ import annotations

import shlex
from typing import Any

from .values import Verbatim, plain


def word(item: Any) -> str:
    if isinstance(item, Verbatim):
        return str(item)
    if isinstance(item, list | tuple):
        return " ".join(word(part) for part in item)
    return shlex.quote(plain(item, "sh"))


FILTERS: dict[str, object] = {}
