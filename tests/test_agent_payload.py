"""agent.pyz: the host agent every artifact carries is one deterministic, standard-library-only zipapp."""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from backstage.phases import agentzip

PACKAGE = Path(agentzip.__file__).resolve().parent.parent
EXPECTED = {"__main__.py", "backstage/__init__.py", "backstage/contract.py", "backstage/files.py",
            "backstage/timeouts.py"} | {
    f"backstage/agent/{p.name}" for p in (PACKAGE / "agent").glob("*.py")}
PRINT = "import sys; from backstage.phases import agentzip; sys.stdout.buffer.write(agentzip.payload())"


def payload_in_child(hashseed: str, tz: str, umask: int) -> bytes:
    env = {**os.environ, "PYTHONHASHSEED": hashseed, "TZ": tz}
    done = subprocess.run([sys.executable, "-c", f"import os; os.umask({umask:#o}); {PRINT}"], capture_output=True,
                          env=env, check=True, timeout=60)
    return done.stdout


def test_the_payload_is_the_same_bytes_everywhere() -> None:
    first = payload_in_child("1", "UTC", 0o022)
    second = payload_in_child("4242", "Pacific/Kiritimati", 0o077)
    assert first == second == agentzip.payload()


def test_the_payload_is_a_zip_of_exactly_the_agent() -> None:
    with zipfile.ZipFile(io.BytesIO(agentzip.payload())) as archive:
        infos = archive.infolist()
        assert archive.comment == b""
        assert archive.testzip() is None
        names = [i.filename for i in infos]
        assert names == sorted(EXPECTED)
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0), info.filename
            assert info.create_system == 3 and info.external_attr == 0o100444 << 16, info.filename
            assert info.compress_type == zipfile.ZIP_STORED, info.filename
        for name in EXPECTED - {"__main__.py", "backstage/__init__.py"}:
            assert archive.read(name) == (PACKAGE.parent / name).read_bytes(), name
    assert "install_old.py" not in " ".join(names)


def test_the_zipapp_runs_isolated(tmp_path: Path) -> None:
    pyz = tmp_path / "agent.pyz"
    pyz.write_bytes(agentzip.payload())
    empty = tmp_path / "empty"  # the checkout must not be what makes the imports work
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-I", str(pyz), "--help"], capture_output=True, text=True, cwd=empty,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    for verb in ("apply", "rollback", "generations", "gc"):
        assert verb in done.stdout
    done = subprocess.run([sys.executable, "-I", str(pyz), str(empty), "apply"], capture_output=True, text=True,
                          cwd=empty, env=env, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"refused: {empty}: unreadable manifest.json:"), done.stderr
    assert "Traceback" not in done.stderr


def module_name(member: str) -> str:
    parts = member.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_agent_imports_only_the_standard_library_and_itself() -> None:
    with zipfile.ZipFile(io.BytesIO(agentzip.payload())) as archive:
        sources = {module_name(i.filename): (i.filename, archive.read(i)) for i in archive.infolist()}
    packed = set(sources) - {"__main__"}
    stdlib = sys.stdlib_module_names
    for module, (member, source) in sorted(sources.items()):
        package = module if member.endswith("__init__.py") else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(source, member)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.partition(".")[0]
                    assert top in stdlib or alias.name in packed, f"{member}: import {alias.name}"
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    assert node.module is not None
                    top = node.module.partition(".")[0]
                    assert top in stdlib or node.module in packed, f"{member}: from {node.module} import"
                    continue
                base = package.split(".")
                if node.level > 1:
                    base = base[:-(node.level - 1)]
                assert base, f"{member}: relative import above the payload"
                target = ".".join(base + ([node.module] if node.module else []))
                assert target in packed, f"{member}: from {'.' * node.level}{node.module or ''} import: {target}"
                if node.module is None:  # from . import x: x is a module of the payload
                    for alias in node.names:
                        assert f"{target}.{alias.name}" in packed, f"{member}: from . import {alias.name}"
