"""Every golden nginx tree passes a real `nginx -t`."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import example_cases, golden_dir
from nginx_check import nginx_test


@pytest.mark.parametrize("case", example_cases())
def test_golden_nginx_passes_nginx_t(case: str, tmp_path: Path) -> None:
    servers = {p.name: p.read_text() for p in sorted((golden_dir(case) / "nginx").glob("*.conf"))}
    assert servers, f"golden/{case} has no nginx files"
    result = nginx_test(servers, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr, result.stderr


@pytest.mark.parametrize("case", [c for c in example_cases() if (golden_dir(c) / "acme").is_dir()])
def test_golden_challenge_servers_pass_nginx_t(case: str, tmp_path: Path) -> None:
    """An ACME Venue's challenge-only server, served while certbot gets its first certificate."""
    servers = {p.name: p.read_text() for p in sorted((golden_dir(case) / "acme").glob("*.conf"))}
    assert servers
    result = nginx_test(servers, tmp_path)
    assert result.returncode == 0 and "[warn]" not in result.stderr, result.stderr


def test_nginx_t_really_rejects_a_broken_server(tmp_path: Path) -> None:
    result = nginx_test({"broken.conf": "server { listen 8080; location / { bogus_directive on; } }\n"}, tmp_path)
    assert result.returncode != 0 and "bogus_directive" in result.stderr
