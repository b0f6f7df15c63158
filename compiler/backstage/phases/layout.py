"""Layout: every generated name and place (files, sockets, links, addresses), decided in one module.

Shared by normalise, check, model and render.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from .. import contract

HASH_LENGTH = 8
READ_ONLY = 0o444
EXECUTABLE = 0o555


@dataclass(frozen=True, slots=True)
class File:
    """One file of an artifact: its bytes and its mode."""

    content: bytes
    mode: int = READ_ONLY
# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107


def default_dirs(production: str) -> dict[str, str]:
    return {
        "state_dir": f"/var/lib/backstage/{production}",
        "run_dir": f"/run/backstage/{production}",
        "log_dir": f"/var/log/backstage/{production}",
    }


def vassal_stem(production: str, sess: str, content_hash: str) -> str:
    return f"{production}--{sess}--{content_hash}"


def in_dir(directory: str, name: str) -> str:
    """directory/name, also when directory is '/'."""
    return f"{directory.rstrip('/')}/{name}"


def socket_path(run_dir: str, production: str, sess: str, content_hash: str) -> str:
    return in_dir(run_dir, f"{vassal_stem(production, sess, content_hash)}.sock")


def env_prefix(sess: str) -> str:
    return "BACKSTAGE_" + sess.upper().replace("-", "_")


def nginx_link_name(production: str) -> str:
    return f"backstage--{production}.conf"


def url_join(prefix: str, relative: str) -> str:
    """Mount a '/x/' prefix under a '/y/' prefix: '/y/x/'."""
    return prefix + relative.removeprefix("/")


HTTP_PORT = 80
HTTPS_PORT = 443


def default_listen(tls: bool) -> int:
    return HTTPS_PORT if tls else HTTP_PORT


def listen_port(listen: object) -> int | None:
    """The port of a Venue's `listen` (a port, or "IPv4:PORT"); None if it is neither."""
    if isinstance(listen, bool):
        return None
    if isinstance(listen, int):
        return listen
    if isinstance(listen, str) and listen.isascii() and listen.isdigit():
        return int(listen)
    if isinstance(listen, str) and ":" in listen and listen.rsplit(":", 1)[1].isdigit():
        return int(listen.rsplit(":", 1)[1])
    return None


def connect_address(listen: str) -> str:
    """Where a client on this host reaches a Venue's `listen`: 127.0.0.1 for a port or 0.0.0.0."""
    ip, _, port = listen.rpartition(":")
    return f"{'127.0.0.1' if ip in ('', '0.0.0.0') else ip}:{port}"


def tcp_address(port: int) -> str:
    """A Sess with a `port` binds it on loopback only."""
    return f"127.0.0.1:{port}"


# ------------------------------------------------------------------------------------------- the store
# Store directory names: <kind>-<name>-<32 hex of a sha256 over everything that determines the content>.

STORE_HASH_LENGTH = 32
PLATFORM = "linux"  # the hosts backstage serves; part of a built Stage's identity


def store_path(state_dir: str, name: str) -> str:
    return in_dir(in_dir(state_dir, contract.STORE), name)


def act_store(act: str, files: Iterable[tuple[str, int, bytes]]) -> str:
    """An Act's code: the hash covers every included path, mode and byte."""
    return f"act-{act}-{contract.tree_hash(files)[:STORE_HASH_LENGTH]}"


def _digest(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(f"{len(data)}\0".encode() + data)
    return digest.hexdigest()[:STORE_HASH_LENGTH]


def entry_store(sess: str, files: Iterable[tuple[str, int, bytes]]) -> str:
    """A Sess's WSGI entry point and the environment it loads."""
    return f"entry-{sess}-{contract.tree_hash(files)[:STORE_HASH_LENGTH]}"


def stage_store(stage: str, requirements: bytes, exact: bool, python: str, uwsgi: str) -> str:
    """A built Stage: the requirements (or lock) bytes, how they are installed, the interpreter it is made
    from and the uWSGI whose Python it must match, and the platform."""
    return f"stage-{stage}-{_digest(requirements, str(exact), python, uwsgi, PLATFORM)}"


def static_store(act: str, code: str, environment: str, settings: str) -> str:
    """An Act's collected static files: its code, its Stage and its settings module determine them."""
    return f"static-{act}-{_digest(code, environment, settings)}"
