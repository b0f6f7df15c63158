"""Targets: the formats backstage writes, each with its escaping, and the Jinja2 templates.

Each target has one Environment. Its `finalize` escapes every `{{ }}` for the target (a template
author cannot forget to), and its filters escape the slots with rules of their own (a server name, a
location path, an ini option name...). A filter's result is `Escaped`, which finalize lets through.

    nginx   server blocks and the production's include file      targets/nginx.py
    uwsgi   vassal ini files                                       targets/uwsgi.py
    pip     a Stage's requirements.txt                             targets/pip.py
    shell   install.sh                                             targets/shell.py
    json    a Sess's entry point and its environment.json          targets/entry.py
    (dns    zone records for the Producer, with issue 14)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import jinja2

from . import nginx, pip, shell, uwsgi
from .values import Escaped, Placeholder, UnsafeValue, Verbatim

__all__ = ["Escaped", "Placeholder", "UnsafeValue", "Verbatim", "escape", "template"]

_TARGETS: dict[str, tuple[Callable[[Any], str], dict[str, Any]]] = {
    "nginx": (nginx.token, dict(nginx.FILTERS)),
    "uwsgi": (uwsgi.value, dict(uwsgi.FILTERS)),
    "pip": (pip.requirement, dict(pip.FILTERS)),
    "shell": (shell.word, dict(shell.FILTERS)),
}


@cache
def environment(target: str) -> jinja2.Environment:
    finalize, filters = _TARGETS[target]
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("backstage.targets", "templates"),
        undefined=jinja2.StrictUndefined,
        finalize=finalize,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(filters)
    return env


@cache
def template(target: str, name: str) -> jinja2.Template:
    """templates/`name`, escaped for `target` ("nginx", "uwsgi", "pip" or "shell")."""
    return environment(target).get_template(name)


def escape(target: str, value: Any) -> str:
    """`value` escaped as a `{{ }}` of `target` is."""
    return _TARGETS[target][0](value)
