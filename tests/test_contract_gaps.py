"""Where the code disagreed with the contract or the README: the default release step, a TLS Venue on
port 80, ports per host, and diagnostics that named keys the file never gave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from backstage.errors import Diagnostic, InputError
from backstage.phases import pipeline

MINIMAL = """\
[production]
name = "minimal"

[stages.main]
virtualenv = "/srv/venvs/minimal"

[acts.site]
wsgi = "site.wsgi"
path = "/srv/apps/site"
settings = "site.settings"

[sesses.site]
act = "site"
stage = "main"

[venues.www]
domain = "example.org"

[gigs.site]
venue = "www"
sess = "site"
"""

CONTRACT = Path(__file__).resolve().parent.parent.parent / "shared" / "production-format.md"


def checked(text: str) -> pipeline.Checked:
    return pipeline.check_bytes(text.encode(), "production.toml")


def errors(text: str) -> list[Diagnostic]:
    with pytest.raises(InputError) as caught:
        pipeline.check_bytes(text.encode(), "production.toml")
    return caught.value.diagnostics


def where(found: list[Diagnostic]) -> list[tuple[str, str]]:
    return [(d.code, d.path) for d in found]


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(needle))


def steps(text: str) -> list[dict[str, object]]:
    compiled = pipeline.compile_checked(checked(text))
    apply = json.loads(compiled.files["apply.json"].content)
    result: list[dict[str, object]] = apply["steps"]
    return result


# 1. `manage.py check --deploy` by default only for an Act whose file gives [acts.X.django].

def test_an_act_with_settings_but_no_django_table_has_no_release_steps() -> None:
    act = checked(MINIMAL).production.acts["site"]
    assert act.django is None or act.django.release == ()
    assert steps(MINIMAL) == []


def test_an_act_with_settings_and_a_django_table_gets_check_deploy() -> None:
    text = MINIMAL.replace('settings = "site.settings"\n', 'settings = "site.settings"\n[acts.site.django]\n')
    act = checked(text).production.acts["site"]
    assert act.django is not None and act.django.release == (("manage.py", "check", "--deploy"),)
    assert [s["argv"][1:] for s in steps(text)] == [["manage.py", "check", "--deploy"]]  # type: ignore[index]


def test_a_django_table_without_settings_gets_no_default_step() -> None:
    text = MINIMAL.replace('settings = "site.settings"\n', '[acts.site.django]\nmigrate = true\n')
    act = checked(text).production.acts["site"]
    assert act.django is not None and act.django.release == ()


# 2. The contract's version 1 example: a TLS Venue with `listen = 80`.

# The contract's (shared/production-format.md) version 1 example, without its `requirements` line: a
# version 1 `requirements` beside `virtualenv` is refused on purpose in version 2 (BS210).
CONTRACT_EXAMPLE = """\
[production]
name = "jazzclub"                         # ^[a-z][a-z0-9-]{0,30}[a-z0-9]$
state_dir = "/var/lib/backstage/jazzclub" # default /var/lib/backstage/<name>: generations, the current link
run_dir = "/run/backstage/jazzclub"       # default /run/backstage/<name>: sockets
log_dir = "/var/log/backstage/jazzclub"   # default /var/log/backstage/<name>

[host]                                    # all optional; defaults shown
vassals_dir = "/etc/uwsgi-emperor/vassals"   # where vassal links go (the Emperor watches it)
nginx_dir = "/etc/nginx/sites-enabled"       # where the production's one nginx include link goes
nginx = ["nginx"]                            # command prefix for `-t` and `-s reload`
nginx_user = "www-data"                      # group that may connect to the unix sockets
emperor_stats = ""                           # optional "127.0.0.1:PORT" of the Emperor's stats socket, to wake it up

[stages.main]
virtualenv = "/srv/venvs/main"       # required, absolute
uid = "www-data"                     # optional: privileges the vassals drop to
gid = "www-data"
[stages.main.uwsgi]                  # optional defaults for every Sess on this Stage
processes = 2

[acts.blog]
wsgi = "blog.wsgi:application"       # required: "module:callable"; "module" alone means ":application"
path = "/srv/apps/blog"              # required, absolute: put on sys.path and chdir'd into
settings = "blog.settings"           # optional: DJANGO_SETTINGS_MODULE
env = { BLOG_THEME = "dark" }        # optional environment variables
static = { "/static/" = "/srv/apps/blog/static/" }   # optional: URL prefix -> directory nginx serves itself
health = "/"                         # optional: path that must answer below 500 after an apply

[acts.api]
wsgi = "api.wsgi"
path = "/srv/apps/api"

[sesses.blog]
act = "blog"
stage = "main"
processes = 4                        # optional; overrides the Stage default
threads = 1                          # optional
needs = ["api"]                      # optional: other Sesses it calls (see below)
[sesses.blog.uwsgi]                  # optional pass-through uWSGI options, validated
max-requests = 1000

[sesses.api]
act = "api"
stage = "main"
protocol = "http"                    # "uwsgi" (default) or "http"
port = 8101                          # optional: listen on 127.0.0.1:PORT instead of a unix socket

[venues.example]
domain = "example.com"
aliases = ["www.example.com"]
listen = 80                          # optional, default 80 (443 with tls); or "127.0.0.1:8080" to bind one address
tls = { certificate = "/etc/ssl/example.pem", key = "/etc/ssl/private/example.key" }  # optional

[venues.sunday]
domain = "sunday.example.com"        # no Gig: it answers 503 "closed"

[gigs.blog-live]
venue = "example"
sess = "blog"
path = "/"                           # optional, default "/"

[gigs.api-live]
venue = "example"
sess = "api"
path = "/api/"
"""


def contract_example() -> str:
    if CONTRACT.is_file():  # beside the repository, as in the project's own checkout: still the same text
        text = CONTRACT.read_text()
        example = text[text.index("```toml\n", text.index("## Example")) + len("```toml\n"):]
        example = example[:example.index("```")]
        assert [line for line in example.splitlines() if not line.startswith("requirements =")] == \
            CONTRACT_EXAMPLE.splitlines()
    return CONTRACT_EXAMPLE


def test_a_tls_venue_listening_on_80_alone_is_valid_and_has_no_plain_side() -> None:
    text = MINIMAL.replace('domain = "example.org"\n', 'domain = "example.org"\nlisten = 80\n'
                           'tls = { certificate = "/etc/a.pem", key = "/etc/a.key" }\n')
    venue = checked(text).production.venues["www"]
    assert venue.redirect_http is False and venue.http_listen is None
    assert venue.listen == "80"


def test_a_tls_venue_on_80_with_http_listen_elsewhere_keeps_its_plain_side() -> None:
    text = MINIMAL.replace('domain = "example.org"\n', 'domain = "example.org"\nlisten = 80\nhttp_listen = 8080\n'
                           'tls = { certificate = "/etc/a.pem", key = "/etc/a.key" }\n')
    venue = checked(text).production.venues["www"]
    assert venue.redirect_http is True and venue.http_listen == "8080"


def test_redirect_http_asked_for_on_a_tls_port_80_is_reported_at_it() -> None:
    text = MINIMAL.replace('domain = "example.org"\n', 'domain = "example.org"\nlisten = 80\n'
                           'tls = { certificate = "/etc/a.pem", key = "/etc/a.key" }\nredirect_http = true\n')
    found = errors(text)
    assert where(found) == [("BS208", "venues.www.redirect_http")]
    assert found[0].line == line_of(text, "redirect_http")


def test_the_contract_example_is_refused_only_for_its_plain_venue_on_the_tls_port() -> None:
    """nginx's `ssl` belongs to the port (flags of one address are OR-ed): `example` with TLS on 80 makes
    port 80 TLS, so `sunday`, plain HTTP by default on 80, cannot be served. The one error names the
    Venue the file gives, not a `tls` key it lacks, and none is reported at `example`'s own plain side."""
    text = contract_example()
    found = errors(text)
    assert where(found) == [("BS208", "venues.sunday")], "\n".join(map(str, found))
    assert found[0].line == line_of(text, "[venues.sunday]")
    assert "default `listen`" in found[0].message and "example" in found[0].message


def test_the_contract_example_is_valid_once_sunday_has_its_own_port() -> None:
    text = contract_example().replace('domain = "sunday.example.com"', 'domain = "sunday.example.com"\nlisten = 8080')
    venues = checked(text).production.venues
    assert venues["example"].http_listen is None and venues["sunday"].listen == "8080"


def test_acme_with_tls_on_port_80_is_reported_at_listen() -> None:
    text = MINIMAL.replace('domain = "example.org"\n', 'domain = "example.org"\nlisten = 80\ntls = { acme = true }\n')
    text += '\n[host.acme]\ndirectory = "https://ca.test/dir"\n'
    found = errors(text)
    assert where(found) == [("BS218", "venues.www.listen")]


# 3. Ports are unique per host.

FLEET = '\n[hosts.web1]\naddress = "203.0.113.11"\n[hosts.web2]\naddress = "203.0.113.12"\n'


def test_two_sesses_may_share_a_port_on_different_hosts() -> None:
    text = MINIMAL.replace('stage = "main"\n', 'stage = "main"\nport = 8000\nhosts = ["web1"]\n') + FLEET + (
        '[sesses.b]\nact = "site"\nstage = "main"\nport = 8000\nhosts = ["web2"]\n')
    checked(text)


def test_two_sesses_may_not_share_a_port_on_one_host() -> None:
    text = MINIMAL.replace('stage = "main"\n', 'stage = "main"\nport = 8000\nhosts = ["web1"]\n') + FLEET + (
        '[sesses.b]\nact = "site"\nstage = "main"\nport = 8000\nhosts = ["web2", "web1"]\n')
    found = errors(text)
    assert where(found) == [("BS203", "sesses.b.port")]
    assert "on host `web1`" in found[0].message


def test_a_sess_port_and_a_venue_listen_may_match_on_different_hosts() -> None:
    text = (MINIMAL.replace('stage = "main"\n', 'stage = "main"\nport = 8000\nhosts = ["web1"]\n')
            .replace('domain = "example.org"\n', 'domain = "example.org"\nhosts = ["web1"]\n')
            + FLEET + '[venues.b]\ndomain = "b.org"\nlisten = 8000\nhosts = ["web2"]\n')
    checked(text)


def test_a_sess_port_and_a_venue_listen_clash_on_one_host() -> None:
    text = (MINIMAL.replace('stage = "main"\n', 'stage = "main"\nport = 8000\nhosts = ["web1"]\n')
            .replace('domain = "example.org"\n', 'domain = "example.org"\nhosts = ["web1"]\n')
            + FLEET + '[venues.b]\ndomain = "b.org"\nlisten = 8000\nhosts = ["web1"]\n')
    assert where(errors(text)) == [("BS203", "sesses.site.port")]


def test_a_sess_port_without_hosts_still_clashes() -> None:
    text = MINIMAL.replace('stage = "main"\n', 'stage = "main"\nport = 8000\n') + (
        '[sesses.b]\nact = "site"\nstage = "main"\nport = 8000\n')
    assert where(errors(text)) == [("BS203", "sesses.b.port")]


def test_tls_and_plain_may_share_a_port_on_different_hosts() -> None:
    text = (MINIMAL.replace('domain = "example.org"\n', 'domain = "example.org"\nhosts = ["web1"]\n')
            + FLEET + '[venues.b]\ndomain = "b.org"\nlisten = 80\nhosts = ["web2"]\n'
            'tls = { certificate = "/etc/a.pem", key = "/etc/a.key" }\n')
    checked(text)


def test_tls_and_plain_clash_on_one_host() -> None:
    text = (MINIMAL.replace('domain = "example.org"\n', 'domain = "example.org"\nhosts = ["web1"]\n')
            + FLEET + '[venues.b]\ndomain = "b.org"\nlisten = 80\nhosts = ["web1"]\n'
            'tls = { certificate = "/etc/a.pem", key = "/etc/a.key" }\n')
    found = errors(text)
    assert where(found) == [("BS208", "venues.b.listen")]
    assert "on host `web1`" in found[0].message


# 4. Every diagnostic names a key the file gives.

def test_an_invalid_host_name_is_reported_at_hosts_and_where_written_only() -> None:
    text = MINIMAL + '\n[hosts.Web1]\naddress = "203.0.113.11"\n[sesses.x]\nact = "site"\nstage = "main"\n' \
        'hosts = ["Web1"]\n'
    assert where(errors(text)) == [("BS103", "hosts.Web1"), ("BS103", "sesses.x.hosts[0]")]


def test_a_sess_on_an_unknown_host_gives_no_error_at_its_venues_default_hosts() -> None:
    text = MINIMAL.replace('stage = "main"\n', 'stage = "main"\nhosts = ["web9"]\n') + FLEET
    assert where(errors(text)) == [("BS201", "sesses.site.hosts[0]")]


def test_a_gig_of_an_unknown_sess_gives_no_error_at_its_venues_default_hosts() -> None:
    text = MINIMAL.replace('sess = "site"', 'sess = "nope"') + FLEET
    assert where(errors(text)) == [("BS201", "gigs.site.sess")]


def test_an_invalid_manage_is_reported_once_at_manage() -> None:
    text = MINIMAL.replace('settings = "site.settings"\n',
                           'settings = "site.settings"\n[acts.site.django]\nmanage = "/x/manage.py"\n')
    assert where(errors(text)) == [("BS110", "acts.site.django.manage")]


def test_a_release_written_with_an_absolute_command_is_still_refused() -> None:
    text = MINIMAL.replace('settings = "site.settings"\n',
                           'settings = "site.settings"\n[acts.site.django]\nrelease = [["/bin/sh", "-c", "x"]]\n')
    assert where(errors(text)) == [("BS213", "acts.site.django.release[0][0]")]


def test_acme_false_is_not_reported_as_acme_true() -> None:
    text = MINIMAL.replace('domain = "example.org"\n', 'domain = "example.org"\ntls = { acme = false }\n')
    found = errors(text)
    assert ("BS105", "venues.www.tls.acme") in where(found)
    assert "BS218" not in [d.code for d in found]
    assert not any("acme = true` but" in d.message for d in found)
