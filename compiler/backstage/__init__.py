"""backstage: a deployment compiler for WSGI/Django apps served by uWSGI and nginx.

The public face, for library users, the CLI, the sandbox, the tests and the benchmarks:

    import backstage
    compiled = backstage.compile("production.toml")   # -> Compiled: .production, .graph, .files, .name
    built = backstage.build("production.toml", "out")  # -> Built: .path, .summary, .cached

Both raise backstage.InputError, whose .diagnostics are backstage.Diagnostic (file, line, code, path,
message, hint). Names are imported on first use, so `import backstage` stays cheap.
"""

from __future__ import annotations

import sys as _sys


def _interrupted_at_start(signum: int, frame: object) -> None:
    """Ctrl-C while the `backstage` command starts (its imports, before cli.main takes SIGINT over):
    nothing is written yet, so it ends at once, 130 as a shell reports SIGINT, and no traceback."""
    import os

    os._exit(130)


def _started_as_command() -> bool:
    """Whether this process is the `backstage` command being started: the console script (its path is
    sys.argv[0] while it imports) or `python -m backstage.cli` (sys.argv[0] is "-m" meanwhile)."""
    argv0 = _sys.argv[0] if _sys.argv else ""
    if argv0 != "-m":
        return argv0.replace("\\", "/").rsplit("/", 1)[-1] in ("backstage", "backstage.exe")
    options = iter(getattr(_sys, "orig_argv", [])[1:])
    for option in options:
        if option.startswith("-m"):
            return (option[2:] or next(options, "")) in ("backstage.cli", "backstage.cli.__main__")
    return False


if _started_as_command():  # before any other import: a Ctrl-C from here on prints no traceback
    import signal as _signal

    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:  # not ignored (a background job)
        _signal.signal(_signal.SIGINT, _interrupted_at_start)

from typing import TYPE_CHECKING, Any  # noqa: E402

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
