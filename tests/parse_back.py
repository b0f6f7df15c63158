"""Read generated files back the way their consumers do: nginx's tokenizer and uWSGI's ini reader.

Both parsers follow the consumer's own rules, not the compiler's: a value the compiler failed to
escape shows up here as a different token, an extra directive or an extra option.

- nginx: a port of ngx_conf_read_token() (src/core/ngx_conf_file.c, nginx 1.22): tokens end at
  whitespace, ';' or '{'; '"' and "'" open quoted tokens only at the start of a token; '#' opens a
  comment only at the start of a token; a backslash protects the next character, and the copy
  step turns \\" \\' \\\\ into the character and \\t \\r \\n into TAB, CR and LF.
- uWSGI: /tmp/uwsgi-facts/FINDINGS.md. '%' + any byte is rewritten over the whole file before
  lines are split (so no '%' may appear at all), lines are split on LF and stripped of space, TAB
  and CR, ';' and '#' lines are comments, '[name]' opens a section, the key is the text before the
  first '=' and the value the stripped rest. '$(', '@(' and '%(' are expanded later, per value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass


class ParseError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------- nginx


@dataclass(frozen=True)
class Directive:
    name: str
    args: tuple[str, ...]
    block: tuple[Directive, ...] | None = None
    line: int = 0

    def __eq__(self, other: object) -> bool:  # the line is where, not what
        if not isinstance(other, Directive):
            return NotImplemented
        return (self.name, self.args, self.block) == (other.name, other.args, other.block)

    def __hash__(self) -> int:
        return hash((self.name, self.args, self.block))

    def find(self, name: str) -> list[Directive]:
        return [d for d in self.block or () if d.name == name]


@dataclass(frozen=True)
class _Token:
    text: str
    line: int
    quoted: bool  # came from a "..." or '...' token: never a syntax character


_SPACE = " \t\r\n"


def unescape(raw: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            if nxt in "\"'\\":
                out.append(nxt)
                i += 2
                continue
            if nxt in "trn":
                out.append({"t": "\t", "r": "\r", "n": "\n"}[nxt])
                i += 2
                continue
        out.append(c)
        i += 1
    return "".join(out)


def nginx_tokens(text: str) -> Iterator[_Token | str]:
    """Yield word tokens and the syntax characters ';', '{', '}' exactly as nginx splits them."""
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
            continue
        if c in _SPACE:
            i += 1
            continue
        if c in ";{}":
            yield c
            i += 1
            continue
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        start_line = line
        if c in "\"'":
            quote, i, start = c, i + 1, i + 1
            while True:
                if i >= n:
                    raise ParseError(f"line {start_line}: unexpected end of file in a quoted token")
                ch = text[i]
                if ch == "\n":
                    line += 1
                if ch == "\\":
                    i += 2
                    if i <= n and text[i - 1] == "\n":
                        line += 1
                    continue
                if ch == quote:
                    break
                i += 1
            yield _Token(unescape(text[start:i]), start_line, True)
            i += 1
            if i < n and text[i] not in _SPACE + ";{)":
                raise ParseError(f"line {line}: unexpected {text[i]!r} after a quoted token")
            continue
        start = i
        variable = False
        while i < n:
            ch = text[i]
            if ch == "{" and variable:
                i += 1
                continue
            variable = False
            if ch == "\\":
                i += 2
                continue
            if ch == "$":
                variable = True
                i += 1
                continue
            if ch in _SPACE or ch in ";{":
                break
            i += 1
        if i > n:
            raise ParseError(f"line {start_line}: backslash at the end of the file")
        yield _Token(unescape(text[start:i]), start_line, False)


def parse_nginx(text: str) -> tuple[Directive, ...]:
    """The directive tree of an nginx configuration file."""
    stream = iter(nginx_tokens(text))

    def block(depth: int) -> tuple[Directive, ...]:
        out: list[Directive] = []
        words: list[_Token] = []
        for tok in stream:
            if isinstance(tok, _Token):
                words.append(tok)
                continue
            if tok == "}":
                if words:
                    raise ParseError(f"line {words[0].line}: unexpected '}}' inside a directive")
                if depth == 0:
                    raise ParseError("unexpected '}' at the top level")
                return tuple(out)
            if not words:
                raise ParseError(f"unexpected {tok!r} without a directive name")
            name, args = words[0], tuple(w.text for w in words[1:])
            words = []
            if tok == ";":
                out.append(Directive(name.text, args, None, name.line))
            else:
                out.append(Directive(name.text, args, block(depth + 1), name.line))
        if words:
            raise ParseError(f"line {words[0].line}: unexpected end of file, expecting ';' or '}}'")
        if depth:
            raise ParseError("unexpected end of file, expecting '}'")
        return tuple(out)

    return block(0)


# ---------------------------------------------------------------------------------------------- uWSGI


@dataclass(frozen=True)
class IniOption:
    key: str
    value: str
    line: int
    has_equals: bool = True


def parse_uwsgi_ini(text: str) -> list[IniOption]:
    """The options uWSGI's ini reader takes from section [uwsgi], in order, duplicates kept.

    A file holding '%', '$(' or '@(' anywhere is refused: uWSGI would rewrite it (see the module
    docstring), so what it reads is not what the file says.
    """
    if "%" in text:
        raise ParseError(f"'%' in the file: uWSGI rewrites it before reading lines ({_around(text, '%')})")
    for magic in ("$(", "@("):
        if magic in text:
            raise ParseError(f"{magic!r} in the file: uWSGI expands it ({_around(text, magic)})")
    if "\x00" in text:
        raise ParseError("NUL byte in the file")
    options: list[IniOption] = []
    section = ""
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip(" \t\r")
        if not line or line[0] in ";#":
            continue
        if line[0] == "[" and line[-1] == "]":
            section = line[1:-1]
            continue
        if section != "uwsgi":
            continue
        key, equals, value = line.partition("=")
        options.append(IniOption(key.strip(" \t\r"), value.strip(" \t\r"), number, bool(equals)))
    return options


def _around(text: str, needle: str) -> str:
    at = text.index(needle)
    return repr(text[max(0, at - 30): at + 30])


_PIP_COMMENT = re.compile(r"(^|\s+)#.*$")
_PIP_ENV = re.compile(r"\$\{[A-Z0-9_]+\}")


def parse_requirements(text: str) -> list[str]:
    """requirements.txt as pip reads it (pip/_internal/req/req_file.py): lines ending in a backslash
    are joined to the next, `(^|\\s+)#.*$` is a comment, `${VAR}` is expanded from the environment
    (refused here: the file would not say what pip installs) and a leading '-' is an option."""
    joined: list[str] = []
    pending = ""
    for raw in text.split("\n"):
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        joined.append(pending + raw)
        pending = ""
    if pending:
        joined.append(pending)
    out: list[str] = []
    for raw in joined:
        line = _PIP_COMMENT.sub("", raw).strip()
        if not line:
            continue
        if _PIP_ENV.search(line):
            raise ParseError(f"pip expands the environment variable in {line!r}")
        if line.startswith("-"):
            raise ParseError(f"pip reads {line!r} as an option")
        out.append(line)
    return out
