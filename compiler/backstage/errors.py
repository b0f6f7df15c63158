"""Diagnostics: every problem with an input carries a stable code, a place and a hint."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

# Characters no value may hold: they would end a line, or drive a terminal, in some output or message.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# Stable codes. A code never changes meaning; retired codes are not reused.
CODES: dict[str, str] = {
    "BS001": "the production file cannot be read",
    "BS002": "the production file is not UTF-8",
    "BS003": "the production file is not valid TOML",
    "BS004": "the production file is too large",
    "BS005": "the output directory cannot be used",
    "BS100": "a value has the wrong type",
    "BS101": "unknown key",
    "BS102": "a required key is missing",
    "BS103": "invalid name",
    "BS104": "a number is out of range",
    "BS105": "a value is not one of the allowed choices",
    "BS106": "a value is too long, too short, or has too many entries",
    "BS107": "a list holds the same item twice",
    "BS108": "a string holds a control character",
    "BS110": "invalid path",
    "BS111": "invalid domain",
    "BS112": "invalid URL prefix",
    "BS113": "invalid environment variable name",
    "BS114": "invalid environment variable value",
    "BS115": "invalid uWSGI option name",
    "BS116": "uWSGI option not allowed as a pass-through",
    "BS117": "invalid uWSGI option value",
    "BS118": "invalid WSGI or Python module name",
    "BS119": "invalid listen address",
    "BS120": "invalid user or group name",
    "BS121": "invalid requirement line",
    "BS122": "invalid production name",
    "BS123": "invalid health path",
    "BS124": "invalid host setting",
    "BS125": "invalid nginx size",
    "BS126": "invalid Producer setting",
    "BS127": "invalid DNS record",
    "BS128": "invalid ssh setting",
    "BS201": "a reference names nothing that exists",
    "BS202": "a domain or alias is claimed twice",
    "BS203": "a port is used twice",
    "BS204": "two locations share one Venue and path",
    "BS205": "`needs` forms a cycle",
    "BS206": "a static prefix and its directory disagree on the trailing slash",
    "BS207": "a generated unix socket path is too long",
    "BS208": "TLS and plain-HTTP venues share a port",
    "BS209": "an Act needs exactly one of `path` and `source`",
    "BS210": "a Stage needs exactly one of `virtualenv`, `lock` and `requirements`",
    "BS211": "an Act's source cannot be used",
    "BS212": "a Stage's lock file cannot be read",
    "BS213": "a Django release step does not fit its Act",
    "BS214": "a variable is given in both `env` and `secrets`",
    "BS215": "an Act's data directory cannot be used",
    "BS216": "a plain-HTTP setting of a Venue without TLS",
    "BS217": "`tls` needs either `acme = true` or both `certificate` and `key`",
    "BS218": "an ACME Venue cannot get its certificate",
    "BS219": "a DNS record does not fit its zone",
    "BS220": "a Venue's DNS name has no address to point at",
    "BS221": "a Sess or Venue is placed where it cannot run",
}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    file: str
    line: int
    col: int
    code: str
    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        # Line 0: the problem is in what a tool set (`backstage try`'s overlay), not in a file's line.
        where = f"{self.file}:{self.line}:{self.col}: {self.code}" if self.line else f"{self.file}: {self.code}"
        text = f"{where} {self.path}: {self.message}" if self.path else f"{where} {self.message}"
        text = _visible(text)
        return f"{text}\n    hint: {_visible(self.hint)}" if self.hint else text

    def sort_key(self) -> tuple[int, int, str, str, str]:
        return (self.line, self.col, self.path, self.code, self.message)


class InputError(Exception):
    """Raised by a phase when the input is wrong; carries every diagnostic found."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics: list[Diagnostic] = sorted(set(diagnostics), key=Diagnostic.sort_key)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class HandoffError(Exception):
    """The artifact or the production's state cannot be handed to an agent; nothing was changed (the CLI
    prints it in one line and exits 1, as for an InputError)."""


def _visible(text: str) -> str:
    """Input echoed in a message must not forge lines or drive the terminal: escape what is not printable."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def diagnostics_json(diagnostics: Sequence[Diagnostic]) -> str:
    return json.dumps([asdict(d) for d in diagnostics], indent=2, ensure_ascii=False)


def format_key_path(parts: Sequence[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part if _is_bare_key(part) else json.dumps(part, ensure_ascii=False)
        out += f".{text}" if out else text
    return out


def _is_bare_key(key: str) -> bool:
    return bool(key) and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
