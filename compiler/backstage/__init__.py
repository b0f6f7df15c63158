"""backstage: a deployment compiler for WSGI/Django apps served by uWSGI and nginx.

The public face, for library users, the CLI, the sandbox, the tests and the benchmarks:

    import backstage
    compiled = backstage.compile("production.toml")   # -> Compiled: .production, .graph, .files, .name
    built = backstage.build("production.toml", "out")  # -> Built: .path, .summary, .cached

Both raise backstage.InputError, whose .diagnostics are backstage.Diagnostic (file, line, code, path,
message, hint). Names are imported on first use, so `import backstage` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Built", "Compiled", "Diagnostic", "InputError", "build", "compile"]

if TYPE_CHECKING:
    from .errors import Diagnostic, InputError
    from .phases.cache import Built
    from .phases.pipeline import Compiled, build, compile

_WHERE = {"Built": "phases.cache", "Compiled": "phases.pipeline", "build": "phases.pipeline",
          "compile": "phases.pipeline", "Diagnostic": "errors", "InputError": "errors"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'backstage' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{_WHERE[name]}", __name__), name)
