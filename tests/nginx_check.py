"""A hermetic `nginx -t` for rendered server files, in a private prefix with stub certificates."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import require_binary

_CERT_LINE = re.compile(r"^(\s*)(ssl_certificate(?:_key)?) .*;$", re.M)


def stub_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "stub.pem", directory / "stub.key"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=backstage-test", "-keyout", str(key),
                        "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def nginx_test(server_files: dict[str, str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run a real `nginx -t` over the given server files.

    Certificates named in the files do not exist on a test machine, so only the ssl_certificate
    lines are pointed at stub files generated here; every other byte is tested as rendered.
    """
    nginx = require_binary("nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = stub_certificate(workdir)
    sites = workdir / "sites"
    sites.mkdir(exist_ok=True)
    for name, text in server_files.items():
        text = _CERT_LINE.sub(lambda m: f"{m[1]}{m[2]} {cert if m[2] == 'ssl_certificate' else key};", text)
        (sites / name).write_text(text)
    main = workdir / "nginx.conf"
    main.write_text(f"""
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{}}
http {{
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    uwsgi_temp_path {workdir}/uwsgi;
    fastcgi_temp_path {workdir}/fastcgi;
    scgi_temp_path {workdir}/scgi;
    access_log off;
    include {sites}/*.conf;
}}
""")
    return subprocess.run([nginx, "-t", "-p", str(workdir), "-c", str(main)], capture_output=True, text=True)
