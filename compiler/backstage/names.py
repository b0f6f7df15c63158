"""Naming conventions shared by check, model and render: one place decides every generated name."""

from __future__ import annotations

HASH_LENGTH = 8
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
