"""`backstage try` runs an example live in a private sandbox and stops it all on Ctrl-C: the showcase,
whose code is copied from `source`, whose Stage is built from requirements and whose static files
are collected into the store."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from backstage.cli.sandbox import find_components
from conftest import EXAMPLES
from harness import free_port, http_get


def test_try_serves_the_showcase_and_stops_cleanly_on_ctrl_c() -> None:
    find_components()
    port = free_port()
    # The showcase's code is a `source` and its Stage is built from requirements: nothing to map.
    command = [sys.executable, "-m", "backstage.cli", "try", str(EXAMPLES / "showcase" / "production.toml"),
               "--port", str(port)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in child.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "Ctrl-C stops it." in line:
                break
        root = Path(re.search(r"is live in (\S+);", "".join(lines))[1])  # type: ignore[index]
        gigs = [child.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        assert any(f"curl -H 'Host: showcase.test' http://127.0.0.1:{port}/api/" in g for g in gigs), gigs
        assert http_get(port, "showcase.test", "/").text.startswith("showcase v1 script_name= ")
        assert http_get(port, "www.showcase.test", "/api/x").text.startswith("showcase v1 script_name=/api ")
        assert http_get(port, "showcase.test", "/static/hello.txt").status == 200
        closed = http_get(port, "later.showcase.test", "/")
        assert (closed.status, closed.text) == (503, "closed\n")
    finally:
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=60)
    assert code == 0, child.stderr.read()  # type: ignore[union-attr]
    assert not root.exists()
    try:
        http_get(port, "showcase.test", "/", timeout=2)
        raise AssertionError("something still answers on the sandbox's port")
    except OSError:
        pass
