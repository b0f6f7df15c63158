"""Real requests to a vassal (uwsgi protocol or HTTP) and to a Gig through nginx; each returns a status."""

from __future__ import annotations

import socket
import struct

from ..contract import GigPlan, VassalPlan


def connect(address: str, timeout: float) -> socket.socket:
    """A connected stream socket to `unix:/path` or `IP:PORT`."""
    target: str | tuple[str, int]
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = address.removeprefix("unix:")
    else:
        ip, port = address.rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (ip, int(port))
    sock.settimeout(timeout)
    try:
        sock.connect(target)
    except OSError:
        sock.close()
        raise
    return sock


def read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the connection closed before a status line")
        data += chunk
    return int(data.split(b"\r\n", 1)[0].split()[1])


def uwsgi_request(address: str, host: str, path: str, timeout: float) -> int:
    """One request in the uwsgi protocol; returns the HTTP status the app answered."""
    query = ""
    if "?" in path:
        path, query = path.split("?", 1)
    env = {"REQUEST_METHOD": "GET", "REQUEST_URI": path + (f"?{query}" if query else ""), "PATH_INFO": path,
           "QUERY_STRING": query, "SCRIPT_NAME": "", "SERVER_NAME": host, "SERVER_PORT": "80",
           "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": host, "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http"}
    body = b"".join(struct.pack("<H", len(k.encode())) + k.encode() + struct.pack("<H", len(v.encode())) + v.encode()
                    for k, v in env.items())
    with connect(address, timeout) as sock:
        sock.sendall(struct.pack("<BHB", 0, len(body), 0) + body)
        return read_status(sock)


def http_request(address: str, host: str, path: str, timeout: float, tls: bool = False) -> int:
    """One HTTP/1.1 request on a new connection (TLS with SNI when asked); returns its status."""
    with connect(address, timeout) as raw:
        sock = raw
        if tls:
            import ssl  # only TLS Venues need it

            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # a health check, not a trust decision
            sock = context.wrap_socket(raw, server_hostname=host)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return read_status(sock)


def vassal_answers(vassal: VassalPlan, timeout: float = 5.0) -> int:
    request = uwsgi_request if vassal.protocol == "uwsgi" else http_request
    return request(vassal.address, vassal.health_host, vassal.health_path, timeout)


def gig_answers(gig: GigPlan, timeout: float = 5.0) -> int:
    return http_request(gig.connect, gig.host, gig.url, timeout, tls=gig.tls)
