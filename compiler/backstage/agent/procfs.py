"""Reading /proc: processes, their parents, sessions, titles, owners, programs and environments, and who
holds which listening TCP socket (Linux only).

A process's title (its argv) is whatever the process says: any user can give theirs any title. What
tells one process from another is what its owner cannot change: its uids (`uids`), the program the
kernel runs (`runs`) and its parent (`descends`).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Stat:
    state: str
    ppid: int
    pgrp: int
    session: int


def pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def stat(pid: int) -> Stat | None:
    """The process's state and parentage, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2:].split()
    return Stat(fields[0], int(fields[1]), int(fields[2]), int(fields[3]))


def alive(pid: int) -> bool:
    found = stat(pid)
    return found is not None and found.state != "Z"


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def title(pid: int) -> str:
    """The process title as `ps` shows it (nginx rewrites its own: "nginx: worker process")."""
    return " ".join(cmdline(pid)).strip()


def uids(pid: int) -> tuple[int, ...]:
    """The process's real, effective, saved and filesystem uids, from /proc/PID/status (empty if it is
    gone). Not the owner of /proc/PID: that is root for any process that made itself non-dumpable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("Uid:"):
            return tuple(int(part) for part in line.split()[1:])
    return ()


def owned_by(pid: int, trusted: set[int]) -> bool:
    """Whether every uid of the process is one of `trusted` (False if it is gone)."""
    found = uids(pid)
    return bool(found) and all(uid in trusted for uid in found)


def runs(pid: int, program: str) -> bool:
    """Whether the process runs the executable `program` (a path): the same file, or, once that file was
    replaced on disk (an upgrade), the same path."""
    try:
        if os.path.samefile(f"/proc/{pid}/exe", program):
            return True
    except OSError:
        pass
    try:
        running = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return running.removesuffix(" (deleted)") == os.path.realpath(program)


def parents() -> dict[int, int]:
    """pid -> parent pid of every live (not zombie) process."""
    found: dict[int, int] = {}
    for pid in pids():
        if (info := stat(pid)) is not None and info.state != "Z":
            found[pid] = info.ppid
    return found


def descends(pid: int, ancestors: set[int], tree: dict[int, int]) -> bool:
    """Whether `pid` is a descendant (a child, a grandchild...) of one of `ancestors`, by `tree` (parents())."""
    seen: set[int] = set()
    while pid in tree and pid not in seen:
        seen.add(pid)
        pid = tree[pid]
        if pid in ancestors:
            return True
    return False


def environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def children(parent: int) -> list[int]:
    return sorted(pid for pid in pids() if (found := stat(pid)) and found.ppid == parent and found.state != "Z")


def tcp_listeners(ip: str, port: int) -> set[int]:
    """Inodes of the listening TCP sockets that a connection to ip:port reaches: bound to that address,
    or to the wildcard (0.0.0.0, ::), in /proc/net/tcp and tcp6."""
    wanted = ipaddress.ip_address(ip)
    found: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A: LISTEN
                continue
            address, _, port_hex = fields[1].partition(":")
            if int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(address)
            # Each 32-bit word is in host (little-endian) order.
            local = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
            if isinstance(local, ipaddress.IPv6Address) and local.ipv4_mapped:
                local = local.ipv4_mapped
            if local == wanted or local.is_unspecified:
                found.add(int(fields[9]))
    return found


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` has open (empty if it is gone or unreadable)."""
    found: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def holders(inodes: set[int]) -> list[int]:
    """Processes holding any of these sockets open."""
    return sorted(pid for pid in pids() if socket_inodes(pid) & inodes) if inodes else []


def unix_listening() -> set[str]:
    """Paths of the listening unix sockets on this host (in this mount namespace), from /proc/net/unix."""
    try:
        lines = Path("/proc/net/unix").read_text(errors="replace").splitlines()[1:]
    except OSError:
        return set()
    # Num RefCount Protocol Flags Type St Inode Path; flag 0x10000 is __SO_ACCEPTCON, a listening socket.
    return {fields[7] for fields in (line.split(None, 7) for line in lines)
            if len(fields) == 8 and int(fields[3], 16) & 0x10000}
