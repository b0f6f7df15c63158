"""The fast paths (rtoml for TOML, jsonschema-rs for the schema) change no verdict and no byte.

A file takes the compiled parser and validator when they accept it, and the reporting ones (tomllib,
jsonschema) otherwise. Each property below compiles every input twice, with the fast paths and without
them, and requires the same outcome: the same artifact (same name, so the same bytes), or the same
diagnostics. The inputs: every hostile file and example, generated productions, the string mutations of
test_properties.py, and edits of TOML syntax that stress the two parsers' differences.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import strategies as S
from backstage import contract
from backstage.errors import InputError
from backstage.phases import check, load, pipeline
from conftest import EXAMPLES
from hypothesis import given, note, settings
from hypothesis import strategies as st
from test_hostile import GENERATED
from test_properties import FIELDS, base_production, mutations

HOSTILE = Path(__file__).parent / "hostile"
TLS = ("/etc/ssl/backstage/site.pem", "/etc/ssl/backstage/site.key")
EXAMPLES_EACH = int(os.environ.get("BACKSTAGE_FAST_PATH_EXAMPLES", "400"))


@contextmanager
def slow_paths() -> Iterator[None]:
    """tomllib and jsonschema only, as before the fast paths."""
    parse, valid = load.parse_fast, check.valid_fast
    load.parse_fast = lambda text: None  # type: ignore[assignment]
    check.valid_fast = lambda data: False  # type: ignore[assignment]
    try:
        yield
    finally:
        load.parse_fast, check.valid_fast = parse, valid


def outcome(raw: bytes, name: str = "production.toml") -> tuple[str, ...]:
    try:
        return ("built", pipeline.compile_bytes(raw, name).name)
    except InputError as exc:
        return ("refused", *(str(d) for d in exc.diagnostics))


def same_verdict(raw: bytes, name: str = "production.toml") -> tuple[str, ...]:
    fast = outcome(raw, name)
    with slow_paths():
        slow = outcome(raw, name)
    assert fast == slow, f"fast paths: {fast}\nslow paths: {slow}"
    return fast


def test_the_fast_paths_are_installed_and_taken() -> None:
    """They are real dependencies: a missing one would make every property below vacuous."""
    text = (EXAMPLES / "minimal" / "production.toml").read_text()
    data = load.parse_fast(text)
    assert data is not None and typed(data) == typed(tomllib.loads(text))
    assert check.valid_fast(data)
    assert not check.valid_fast({**data, "unknown": 1})


@pytest.mark.parametrize("path", sorted(HOSTILE.glob("*.toml")) + sorted(EXAMPLES.glob("*/production.toml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_hostile_files_and_examples_get_the_same_verdict(path: Path) -> None:
    verdict = same_verdict(path.read_bytes(), str(path))
    if path.parent == HOSTILE:
        assert verdict[0] == "refused", verdict


@pytest.mark.parametrize("case", sorted(name for name in GENERATED if name not in ("bytes-10mb", "bytes-100k-gigs")))
def test_hostile_bytes_get_the_same_verdict(case: str) -> None:
    assert same_verdict(GENERATED[case][0]())[0] == "refused"


def test_generated_productions_get_the_same_artifact() -> None:
    built = []

    @settings(max_examples=EXAMPLES_EACH)
    @given(data=S.productions(TLS))
    def generated(data: S.Data) -> None:
        verdict = same_verdict(S.to_toml(data).encode())
        built.append(verdict[0] == "built")

    generated()
    assert sum(built) >= len(built) // 2, f"only {sum(built)} of {len(built)} generated productions built"


def test_mutated_values_get_the_same_verdict() -> None:
    verdicts: list[str] = []

    @settings(max_examples=EXAMPLES_EACH)
    @given(mutation=mutations())
    def mutated(mutation: tuple[str, str]) -> None:
        label, value = mutation
        data = S.clone(base_production(TLS))
        FIELDS[label][0](data, value)
        note(f"field {label} = {value!r}")
        verdicts.append(same_verdict(S.to_toml(data).encode())[0])

    mutated()
    assert {"built", "refused"} <= set(verdicts), verdicts


# Characters that carry meaning in TOML, and a few that do not.
SYNTAX = st.sampled_from([*'[]{}="\'.,#\\\n\t -+_:0123456789eE', "true", "false", "\'\'\'", '"""', "\\u00e9",
                          "1979-05-27", "1979-05-27T07:32:00Z", "07:32:00", "0x1F", "0o17", "0b1", "1_000", "inf",
                          "nan", "+inf", "1e400", "9223372036854775808", "\ufeff", "\r", "\r\n", "\x00", "\x7f",
                          "\u2028", "\x0c", "\\U0001F600", "\\x41", "a.b", "[[x]]", "{}", "[]"])


def typed(value: object) -> object:
    """The value with every type spelled out: 1 == True and nan != nan would hide differences."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, repr(value))


@st.composite
def toml_edits(draw: st.DrawFn) -> str:
    text = S.to_toml(base_production(TLS))
    if draw(st.booleans()):  # also the way people write: bare keys, [table.name] headers
        text = text.replace('"', "", 0)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = text[:at] + "".join(draw(st.lists(SYNTAX, max_size=3))) + text[at + cut:]
    return text


def test_edited_toml_gets_the_same_verdict_and_data() -> None:
    seen: dict[str, int] = {}

    @settings(max_examples=EXAMPLES_EACH)
    @given(text=toml_edits())
    def edited(text: str) -> None:
        note(repr(text))
        try:
            wanted = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            wanted = None
        got = load.parse_fast(text)
        # rtoml may refuse what tomllib reads (tomllib then reads it), never read what tomllib refuses,
        # and never read it differently.
        assert got is None or typed(got) == typed(wanted), f"rtoml: {got!r}\ntomllib: {wanted!r}"
        seen["tomllib reads"] = seen.get("tomllib reads", 0) + (wanted is not None)
        seen["rtoml reads"] = seen.get("rtoml reads", 0) + (got is not None)
        same_verdict(text.encode())

    edited()
    assert seen["tomllib reads"] > 0 and seen["rtoml reads"] > 0, seen


# ------------------------------------------------------------------ the plan's and manifest's JSON

@dataclass(frozen=True, slots=True)
class _Inner:
    text: str
    count: int | None


@dataclass(frozen=True, slots=True)
class _Outer:
    """A stand-in for a plan: a field of each kind a contract dataclass holds."""

    zeta: str
    alpha: int
    flag: bool
    ratio: float
    inner: _Inner | None
    items: tuple[_Inner, ...]
    pairs: list[tuple[str, str]]
    table: dict[str, object]


_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)  # quotes, backslashes, control and non-ASCII
_INNER = st.builds(_Inner, _TEXT, st.none() | st.integers())
_OUTER = st.builds(_Outer, _TEXT, st.integers(), st.booleans(), st.floats(), st.none() | _INNER,
                   st.lists(_INNER, max_size=3).map(tuple), st.lists(st.tuples(_TEXT, _TEXT), max_size=3),
                   st.dictionaries(_TEXT, st.none() | st.integers() | _TEXT | st.lists(_TEXT, max_size=2),
                                   max_size=3))


@settings(max_examples=300, deadline=None)
@given(_OUTER)
def test_direct_json_is_the_encoders(value: _Outer) -> None:
    """contract writes a plan's and a manifest's lines without building their dicts first; the bytes must
    be json's for the same data (sorted keys, ASCII escapes, NaN and Infinity as json writes them), and
    must read back to it."""
    data = contract.plain(value)
    lines = contract._lines_json(value)
    assert lines.replace(b",\n    ", b", ").replace(b"[\n    ", b"[").replace(b"\n  ]", b"]").replace(
        b"{\n  ", b"{").replace(b",\n  ", b", ").replace(b"\n}\n", b"}") == json.dumps(data, sort_keys=True).encode()
    for item in [value.inner, *value.items, value.pairs, value.table]:
        assert contract._json(item) == json.dumps(contract.plain(item), sort_keys=True)
    if value.ratio == value.ratio:  # NaN is not equal to itself
        assert json.loads(lines) == data


_PATHS = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(_TEXT, _TEXT, _TEXT, st.dictionaries(_PATHS, st.tuples(st.sampled_from([0o444, 0o555, 0o644, 0]),
                                                               st.binary(max_size=40)), max_size=6))
def test_manifest_written_directly_is_the_manifests(version: str, production: str, input_hash: str,
                                                    found: dict[str, tuple[int, bytes]]) -> None:
    """artifact writes the manifest's bytes without its FileEntry objects: they must be the Manifest's own,
    for any paths (quotes, control and non-ASCII characters), modes, contents and no files at all."""
    files = [(path, mode, content) for path, (mode, content) in found.items()]
    manifest = contract.Manifest(version, contract.FORMAT, production, input_hash, tuple(
        contract.FileEntry(path, hashlib.sha256(content).hexdigest(), f"{mode:04o}")
        for path, mode, content in sorted(files)))
    want = manifest.to_json()
    assert contract.manifest_json(version, production, input_hash, reversed(files)) == want
    assert contract.Manifest.from_json(want).files == manifest.files
