"""Loading keeps a way back from each key path to its line, across TOML's spellings of a key."""

from __future__ import annotations

import pytest
from backstage.errors import InputError
from backstage.phases import load

DOC = '''\
# comment
[production]
name = "x"   # trailing comment

[acts.blog]
wsgi = """multi
line ] } = string"""
env = { A = "1", "B" = '2' }
static."/static/" = "/srv/s/"

[acts.blog.more]
list = [
  "a",   # first
  [1, 2],
  "c",
]
when = 1979-05-27 07:32:00Z
after = 1

[[tables]]
k = 1
[[tables]]
k = 2
'''


@pytest.mark.parametrize(("path", "line"), [
    (("production",), 2),
    (("production", "name"), 3),
    (("acts",), 5),
    (("acts", "blog", "wsgi"), 6),
    (("acts", "blog", "env", "A"), 8),
    (("acts", "blog", "env", "B"), 8),
    (("acts", "blog", "static", "/static/"), 9),
    (("acts", "blog", "more", "list", 0), 13),
    (("acts", "blog", "more", "list", 1, 1), 14),
    (("acts", "blog", "more", "list", 2), 15),
    (("acts", "blog", "more", "after"), 18),
    (("tables", 1, "k"), 23),
    (("acts", "blog", "env", "MISSING"), 8),
])
def test_key_paths_map_to_lines(path: tuple[str | int, ...], line: int) -> None:
    loaded = load.load_bytes(DOC.encode(), "doc.toml")
    assert loaded.source.locate(path)[0] == line


def test_columns_point_at_the_key() -> None:
    loaded = load.load_bytes(DOC.encode(), "doc.toml")
    assert loaded.source.locate(("acts", "blog", "env", "B")) == (8, 18)


@pytest.mark.parametrize(("raw", "code", "line"), [
    (b'[production]\nname = "\xff"\n', "BS002", 2),
    (b'[production]\nname = \n', "BS003", 2),
    (b"[production]\n[production]\n", "BS003", 2),
    (b"x" * (load.MAX_BYTES + 1), "BS004", 1),
])
def test_unreadable_input_is_a_coded_error(raw: bytes, code: str, line: int) -> None:
    with pytest.raises(InputError) as caught:
        load.load_bytes(raw, "f.toml")
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.line) == (code, line)


def test_input_hash_is_the_sha256_of_the_bytes() -> None:
    import hashlib
    assert load.load_bytes(b"", "e.toml").input_hash == hashlib.sha256(b"").hexdigest()
