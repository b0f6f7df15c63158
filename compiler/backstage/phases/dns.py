"""DNS names and record contents, shared by check (what is wrong, and where) and render (the records).

Names are absolute and canonical here: lower case, with the trailing dot, as PowerDNS's API writes them.
Record contents are in PowerDNS's (zone-file) syntax; `content_problem` says what PowerDNS would refuse
or misread, so that a wrong record is an error at its line rather than a failed apply.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

APEX = "@"
_LABEL = r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)"
_HOST = re.compile(rf"^(?:{_LABEL}\.)+$|^\.$")  # an absolute host name (a target), or the root
_UINT16 = 65535


def absolute(name: str, zone: str) -> str:
    """A record name of zone `zone` (`@`, relative, or absolute with its dot) as an absolute name."""
    zone = canonical(zone)
    if name == APEX:
        return zone
    if name.endswith("."):
        return name.lower()
    return f"{name.lower()}.{zone}"


def canonical(name: str) -> str:
    return name.lower().rstrip(".") + "."


def inside(name: str, zone: str) -> bool:
    """Whether the absolute `name` is `zone` or below it."""
    zone = canonical(zone)
    return name == zone or name.endswith("." + zone)


def zone_of(name: str, zones: Iterable[str]) -> str | None:
    """The most specific of `zones` that holds the host name `name`, or None."""
    name = canonical(name)
    best = None
    for zone in zones:
        if inside(name, zone) and (best is None or len(canonical(zone)) > len(canonical(best))):
            best = zone
    return best


def normal(rtype: str, content: str) -> str:
    """`content` as PowerDNS answers it back, so that an unchanged record compares equal: an IPv6
    address compressed and in lower case (2001:DB8:0::1 is 2001:db8::1)."""
    return ipaddress.IPv6Address(content).compressed if rtype == "AAAA" else content


def _target(text: str) -> str | None:
    if not _HOST.match(text):
        return f"`{text}` is not an absolute host name: end it with a dot (mail.example.com.)"
    return None


def _numbers(parts: list[str], count: int, limit: int) -> str | None:
    for part in parts[:count]:
        if not part.isdigit() or int(part) > limit:
            return f"`{part}` is not a number from 0 to {limit}"
    return None


def content_problem(rtype: str, content: str) -> str | None:
    """Why `content` is not a valid `rtype` record in PowerDNS's syntax, or None."""
    parts = content.split()
    if rtype in ("A", "AAAA"):
        kind = ipaddress.IPv4Address if rtype == "A" else ipaddress.IPv6Address
        try:
            kind(content)
        except ValueError:
            return f"`{content}` is not an {'IPv4' if rtype == 'A' else 'IPv6'} address"
        return None
    if rtype in ("CNAME", "NS"):
        return _target(content) if len(parts) == 1 else f"a {rtype} record holds one absolute host name"
    if rtype == "MX":
        if len(parts) != 2:
            return "an MX record is `PRIORITY HOST.` (10 mail.example.com.)"
        return _numbers(parts, 1, _UINT16) or _target(parts[1])
    if rtype == "SRV":
        if len(parts) != 4:
            return "an SRV record is `PRIORITY WEIGHT PORT HOST.` (10 5 5060 sip.example.com.)"
        return _numbers(parts, 3, _UINT16) or _target(parts[3])
    if rtype == "TXT":
        return _txt_problem(content)
    if rtype == "CAA":
        match = re.fullmatch(r'(\d{1,3}) ([a-z0-9]+) "([^"\\]*)"', content)
        if not match or int(match[1]) > 255:
            return 'a CAA record is `FLAGS TAG "VALUE"` (0 issue "letsencrypt.org")'
        return None
    return f"type {rtype} is not supported"


def _txt_problem(content: str) -> str | None:
    """TXT content is one or more quoted strings of at most 255 bytes each, as in a zone file."""
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', content)
    if not strings or re.sub(r'"(?:[^"\\]|\\.)*"', "", content).strip():
        return 'TXT content is one or more quoted strings: "v=spf1 -all"'
    if any(len(s.encode()) > 255 for s in strings):
        return "a TXT string is at most 255 bytes: split it into several quoted strings"
    return None
