"""Test-only helpers around the product's sandbox (backstage.cli.sandbox): HTTP through its nginx, the
Emperor's vassals and nginx's workers, so tests can look at what an apply did.

    with TestSandbox(tmp_path / "sandbox") as sandbox:
        ...apply a production built with sandbox.host_table() and sandbox.listen...
        assert sandbox.get("show.test", "/").status == 200
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backstage.agent import emperor, nginx, procfs
from backstage.cli.sandbox import LOCALHOST, Sandbox, free_ports

__all__ = ["Response", "TestSandbox", "free_port", "http_get"]


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def free_port() -> int:
    return free_ports(1)[0]


def http_get(port: int, host: str, path: str = "/", timeout: float = 10.0) -> Response:
    """One GET to 127.0.0.1:port with this Host header, on a new connection closed afterwards."""
    connection = http.client.HTTPConnection(LOCALHOST, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": host, "Connection": "close"})
        reply = connection.getresponse()
        body = reply.read()
        return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, body)
    finally:
        connection.close()


class TestSandbox(Sandbox):
    """The product's Sandbox, plus what tests ask of it."""

    __test__ = False  # a helper, not a pytest test class

    def get(self, host: str, path: str = "/", timeout: float = 10.0) -> Response:
        """GET through the private nginx with this Host header."""
        return http_get(self.http_port, host, path, timeout)

    def stats(self) -> dict[str, Any]:
        """The Emperor's stats JSON ("pid", and "vassals" with each one's "id" and "pid")."""
        return emperor.stats(self.emperor_stats)

    def vassal_pids(self) -> dict[str, int]:
        """Vassal file name (e.g. "prod--sess--hash.ini") -> pid of its uWSGI master."""
        try:
            stats = self.stats()
        except (OSError, ValueError):
            return self._vassal_pids_from_proc()
        found = {}
        vassals = stats.get("vassals", [])
        assert isinstance(vassals, list)
        for vassal in vassals:
            pid = int(vassal.get("pid", 0))
            if pid > 0:
                found[Path(str(vassal["id"])).name] = pid
        return found

    def _vassal_pids_from_proc(self) -> dict[str, int]:
        """The same from /proc: a vassal master is a child of the Emperor running `uwsgi --ini FILE`."""
        if self._emperor is None:
            return {}
        found = {}
        for the_emperor in procfs.children(self._emperor.pid):
            for pid in procfs.children(the_emperor):
                command = procfs.cmdline(pid)
                if "--ini" in command[:-1]:
                    ini = Path(command[command.index("--ini") + 1])
                    if ini.parent == self.vassals_dir:
                        found[ini.name] = pid
        return found

    def nginx_worker_pids(self) -> set[int]:
        """The private nginx's workers serving the current configuration (not those a reload retired)."""
        if self._nginx is None or self._nginx.poll() is not None:
            return set()
        master = self._nginx.pid
        return {pid for pid, parent in nginx.workers().items()
                if parent == master and "shutting down" not in procfs.title(pid)}
