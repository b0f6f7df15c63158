"""Phase 1, load: TOML bytes -> plain data, plus a way back from a key path to its line."""

from __future__ import annotations

import bisect
import errno
import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, InputError, format_key_path

MAX_BYTES = 8 * 1024 * 1024
KeyPath = tuple[str | int, ...]

_TOML_WHERE = re.compile(r"\(at line (\d+), column (\d+)\)")


@dataclass(slots=True)
class Source:
    """The text of one production file; key positions are indexed lazily, on the first error."""

    name: str
    text: str
    _scanner: _KeyScanner | None = field(default=None, repr=False)
    # Key paths set by an overlay rather than the file, and whose name to report them under.
    _injected: tuple[KeyPath, ...] = field(default=(), repr=False)
    _injected_by: str = field(default="", repr=False)

    def inject(self, paths: tuple[KeyPath, ...], by: str) -> None:
        self._injected, self._injected_by = paths, by

    @property
    def injected(self) -> bool:
        """Whether an overlay set values the text does not hold."""
        return bool(self._injected)

    def locate(self, path: KeyPath) -> tuple[int, int]:
        """Line and column of the deepest key on `path` that the file spells out."""
        if self._scanner is None:
            self._scanner = _KeyScanner(self.text)
        positions = self._scanner.scan_until(path)
        for end in range(len(path), 0, -1):
            found = positions.get(path[:end])
            if found:
                return found
        return (1, 1)

    def diagnostic(self, path: KeyPath, code: str, message: str, hint: str = "") -> Diagnostic:
        if any(path[:len(prefix)] == prefix for prefix in self._injected):
            return Diagnostic(self._injected_by, 0, 0, code, format_key_path(path), message, hint)
        line, col = self.locate(path)
        return Diagnostic(self.name, line, col, code, format_key_path(path), message, hint)


@dataclass(frozen=True, slots=True)
class Loaded:
    data: dict[str, Any]
    source: Source
    input_hash: str


def read(path: str | Path) -> bytes:
    """The production file's bytes, at most MAX_BYTES + 1 of them (load_bytes refuses more)."""
    try:
        return read_regular(path, MAX_BYTES + 1)
    except OSError as exc:
        raise InputError([Diagnostic(str(path), 1, 1, "BS001", "", exc.strerror or str(exc),
                                     "give the path of a production.toml file")]) from None


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> OSError:
    kind = next((name for test, name in _KINDS if test(mode)), "")
    return OSError(errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL,
                   f"it is {kind}, not a regular file" if kind else "it is not a regular file")


def read_regular(path: str | Path, limit: int) -> bytes:
    """The first `limit` bytes of the regular file at `path` (symlinks followed). Anything else is refused
    before it is read: a FIFO would block until a writer came, a device (/dev/zero) would never end.
    Raises OSError; its strerror says what is wrong."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:  # a socket cannot be opened at all (ENXIO): say what it is instead
        try:
            mode = os.stat(path).st_mode
        except OSError:
            raise exc from None
        raise (exc if stat.S_ISREG(mode) else _not_regular(mode)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(mode)
        chunks: list[bytes] = []
        left = limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_file(path: str | Path) -> Loaded:
    return load_bytes(read(path), str(path))


def load_bytes(raw: bytes, name: str) -> Loaded:
    if len(raw) > MAX_BYTES:
        raise InputError([Diagnostic(
            name, 1, 1, "BS004", "",
            f"the file is over the limit of {MAX_BYTES} bytes",  # read() stops one byte past it
            "split the production: one file should describe one host's sites",
        )])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError([Diagnostic(name, line, col, "BS002", "",
                                     f"byte 0x{raw[exc.start]:02x} is not UTF-8",
                                     "save the file as UTF-8")]) from None
    if text.startswith("\ufeff"):  # TOML 1.0 has no BOM; rtoml would skip it, tomllib calls it a bad statement
        raise InputError([Diagnostic(name, 1, 1, "BS003", "", "the file starts with a byte order mark (BOM)",
                                     "save it as UTF-8 without one")])
    fast = parse_fast(text)
    if fast is not None:
        return Loaded(fast, Source(name, text), hashlib.sha256(raw).hexdigest())
    import tomllib  # the reporting parser, imported only when rtoml did not read the file

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = _TOML_WHERE.search(message)
        line, col = (int(where[1]), int(where[2])) if where else (text.count("\n") + 1, 1)
        message = _TOML_WHERE.sub("", message).strip()
        raise InputError([Diagnostic(name, line, col, "BS003", "", message,
                                     "see https://toml.io/en/v1.0.0 for the syntax")]) from None
    except RecursionError:
        raise InputError([Diagnostic(name, _deep_line(text), 1, "BS003", "",
                                     "arrays or inline tables are nested too deeply to read",
                                     "a production file needs only a few levels of nesting")]) from None
    return Loaded(data, Source(name, text), hashlib.sha256(raw).hexdigest())


# rtoml reads TOML 1.1, tomllib TOML 1.0: what 1.1 added, and what rtoml forgives, goes to tomllib. A
# match may well be valid 1.0 (inside a string, say): that file is then only read the slower way.
_INLINE_TABLE_ACROSS_LINES = re.compile(r"\{[^}\n]*(?:\n|$)")
_TRAILING_COMMA = re.compile(r",\s*\}")
_MINUTES = re.compile(r":\d\d")


def _beyond_toml_1_0(text: str) -> bool:
    """\\x.. and \\e escapes, a time without seconds, an inline table over several lines or with a trailing
    comma, a byte order mark (rtoml skips it), and non-ASCII text (1.1 widened bare keys)."""
    if not text.isascii() or "\\x" in text or "\\e" in text:
        return True
    if _INLINE_TABLE_ACROSS_LINES.search(text) or _TRAILING_COMMA.search(text):
        return True
    for found in _MINUTES.finditer(text):  # HH:MM not followed by :SS, and not part of an address
        start, end = found.start(), found.end()
        hours = text[start - 2:start]
        if (len(hours) == 2 and hours.isdigit() and (start < 3 or text[start - 3] not in "0123456789:.")
                and not (text[end:end + 1] == ":" and text[end + 1:end + 2].isdigit())):
            return True
    return False


def parse_fast(text: str) -> dict[str, Any] | None:
    """The document parsed by rtoml (compiled, about 10x faster than tomllib), or None when rtoml cannot
    read it: then tomllib reads it again, and its error (with line and column) is the one reported.
    tests/test_fast_paths.py holds both parsers to the same verdicts and the same data."""
    if _beyond_toml_1_0(text):
        return None
    try:
        import rtoml
    except ImportError:  # not installed: tomllib alone
        return None
    try:
        data: dict[str, Any] = rtoml.loads(text)
    except Exception:  # rtoml's TomlParsingError, or anything else: tomllib decides
        return None
    return data


def _deep_line(text: str, limit: int = 100) -> int:
    """The first line where brackets nest deeper than `limit` (strings ignored: a rough place is enough)."""
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        for char in line:
            depth += (char in "[{") - (char in "]}")
            if depth > limit:
                return number
    return 1


_BARE = re.compile(r"[A-Za-z0-9_-]+")
_BASIC = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL = re.compile(r"'[^'\n]*'")
_ML_BASIC = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*"""(?:"{0,2})', re.S)
_ML_LITERAL = re.compile(r"'''(?:[^']|'(?!''))*'''(?:'{0,2})", re.S)
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:[Zz]|[+-]\d{2}:\d{2})?)?"
)
_SCALAR = re.compile(r"[^,\]\}\s#]+")


class _KeyScanner:
    """Walks a document tomllib has already accepted and notes where each key path starts.

    tomllib gives no positions, so this recovers them; it only runs when there is an error to place.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.positions: dict[KeyPath, tuple[int, int]] = {}
        self.array_tables: dict[KeyPath, int] = {}
        self.table: KeyPath = ()

    def scan_until(self, wanted: KeyPath) -> dict[KeyPath, tuple[int, int]]:
        """Scan on from where the last call stopped, until `wanted` is placed or the text ends."""
        import tomllib  # the scanner only runs to place an error

        while wanted not in self.positions and self._skip_blank(newlines=True):
            try:
                if self.text[self.i] == "[":
                    self.table = self._header()
                else:
                    self._assignment(self.table)
            except (AssertionError, ValueError, IndexError, tomllib.TOMLDecodeError):
                pass  # a construct this scanner does not follow: keep what was placed so far
            end = self.text.find("\n", self.i)
            self.i = len(self.text) if end < 0 else end
        return self.positions

    def _mark(self, path: KeyPath, at: int) -> None:
        if path not in self.positions:
            line = bisect.bisect_right(self.line_starts, at)
            self.positions[path] = (line, at - self.line_starts[line - 1] + 1)

    def _skip_blank(self, newlines: bool) -> bool:
        text, n = self.text, len(self.text)
        while self.i < n:
            c = text[self.i]
            if c == "#":
                end = text.find("\n", self.i)
                self.i = n if end < 0 else end
            elif c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            else:
                return True
        return False

    def _header(self) -> KeyPath:
        start = self.i
        is_array = self.text.startswith("[[", self.i)
        self.i += 2 if is_array else 1
        keys = self._dotted_key()
        self.i = self.text.index("]", self.i) + (2 if is_array else 1)
        if is_array:
            index = self.array_tables.get(keys, -1) + 1
            self.array_tables[keys] = index
            keys = (*keys, index)
        for end in range(1, len(keys) + 1):
            self._mark(keys[:end], start)
        return keys

    def _assignment(self, prefix: KeyPath) -> None:
        start = self.i
        keys = (*prefix, *self._dotted_key())
        for end in range(len(prefix) + 1, len(keys) + 1):
            self._mark(keys[:end], start)
        self._skip_blank(newlines=False)
        self.i += 1  # '='
        self._value(keys)

    def _dotted_key(self) -> KeyPath:
        import tomllib

        keys: list[str] = []
        while True:
            self._skip_blank(newlines=False)
            c = self.text[self.i]
            if c == '"':
                m = _BASIC.match(self.text, self.i)
                assert m
                keys.append(tomllib.loads(f"k = {m[0]}")["k"])
            elif c == "'":
                m = _LITERAL.match(self.text, self.i)
                assert m
                keys.append(m[0][1:-1])
            else:
                m = _BARE.match(self.text, self.i)
                assert m
                keys.append(m[0])
            self.i = m.end()
            self._skip_blank(newlines=False)
            if self.i < len(self.text) and self.text[self.i] == ".":
                self.i += 1
                continue
            return tuple(keys)

    def _value(self, path: KeyPath) -> None:
        self._skip_blank(newlines=False)
        text = self.text
        c = text[self.i]
        if c == "{":
            self.i += 1
            while self._skip_blank(newlines=False) and text[self.i] != "}":
                if text[self.i] == ",":
                    self.i += 1
                    continue
                self._assignment(path)
            self.i += 1
        elif c == "[":
            self.i += 1
            index = 0
            while self._skip_blank(newlines=True) and text[self.i] != "]":
                if text[self.i] == ",":
                    self.i += 1
                    index += 1
                    continue
                self._mark((*path, index), self.i)
                self._value((*path, index))
            self.i += 1
        else:
            for pattern in (_ML_BASIC, _ML_LITERAL, _BASIC, _LITERAL, _DATETIME, _SCALAR):
                m = pattern.match(text, self.i)
                if m:
                    self.i = m.end()
                    return
            self.i += 1
