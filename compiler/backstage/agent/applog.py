"""What a Sess's log (log_dir/<sess>.log) says about why it failed: the app's own error, not access lines.

Old and new vassals of a Sess write the same log, so a switch notes each log's size before it starts
anything and reads only what was written after. The entry point makes Django's request and security
errors reach the log (see targets/templates/wsgi_entry.py); uWSGI writes a failed import's traceback
there itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..contract import Plan

MAX_READ = 1 << 20  # bytes of a log read back at most: the newest
LINES = 25  # lines of an error quoted at most
ACCESS = re.compile(r"^\[pid: \d+\|app: ")  # uWSGI's request log lines
REFUSED_HOST = re.compile(r"Invalid HTTP_HOST header: '([^']*)'")


def path(plan: Plan, sess: str) -> Path:
    return Path(plan.log_dir, f"{sess}.log")


def offsets(plan: Plan) -> dict[str, int]:
    """Each Sess's log size now (0 for a log not written yet)."""
    found = {}
    for vassal in plan.vassals:
        try:
            found[vassal.sess] = os.stat(path(plan, vassal.sess)).st_size
        except OSError:
            found[vassal.sess] = 0
    return found


def since(plan: Plan, sess: str, offset: int) -> list[str]:
    """The lines the Sess's log gained after `offset` (its newest MAX_READ bytes of them)."""
    try:
        with open(path(plan, sess), "rb") as log:
            size = os.fstat(log.fileno()).st_size
            start = offset if offset <= size else 0  # a log rotated meanwhile: all of the new one
            log.seek(max(start, size - MAX_READ))
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()


def refused_host(lines: list[str]) -> str | None:
    """The Host Django's DisallowedHost refused, if the log says so."""
    for line in reversed(lines):
        if found := REFUSED_HOST.search(line):
            return found[1]
    return None


def app_error(lines: list[str]) -> list[str]:
    """The app's newest error: its last traceback (with the line before it, which names the request),
    up to the exception's own line; else the last lines that are not access lines."""
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:
        first = starts[-1]
        end = first + 1
        while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
            end += 1
        named = first and lines[first - 1].startswith("backstage: ")  # Django's own line, from the entry point
        block = lines[first - 1 if named else first:end + 1]
        if named and REFUSED_HOST.search(block[0]):
            return [block[0]]  # a DisallowedHost: its message says it all; the traceback is Django's internals
        return block if len(block) <= LINES else [*block[:3], "    ...", *block[-(LINES - 4):]]
    return [line for line in lines if line.strip() and not ACCESS.match(line)][-LINES:]


def excerpt(plan: Plan, sess: str, offset: int) -> str:
    """The app's error for a failure message: the lines themselves, and the log they are from."""
    lines = app_error(since(plan, sess, offset))
    where = path(plan, sess)
    if not lines:
        return f"(its log {where} says nothing since this apply began)"
    return f"the app's log ({where}) says:\n" + "\n".join(f"    {line}" for line in lines)


def status_problem(status: int, lines: list[str]) -> str:
    """Why a status is not healthy, in words: for a 400 that Django's DisallowedHost gave, the host and
    the fix."""
    refused = refused_host(lines) if status == 400 else None
    if refused is not None:
        return (f"answered 400: Django refused the host {refused!r} (DisallowedHost); its ALLOWED_HOSTS must "
                "hold every domain and alias of its Venues: set ALLOWED_HOSTS = "
                "os.environ[\"BACKSTAGE_HOSTS\"].split() in its settings")
    return f"answered {status}" + (" (a health check needs a status below 400)" if status < 500 else "")
