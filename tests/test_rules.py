"""Each rule of the contract: a violating file gives the right code, line and key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from backstage.errors import CODES, Diagnostic, InputError
from backstage.phases import pipeline

BASE = """\
[production]
name = "club"

[stages.main]
virtualenv = "/srv/venvs/main"

[acts.blog]
wsgi = "blog.wsgi"
path = "/srv/apps/blog"

[acts.api]
wsgi = "api.wsgi"
path = "/srv/apps/api"

[sesses.blog]
act = "blog"
stage = "main"

[sesses.api]
act = "api"
stage = "main"

[venues.example]
domain = "example.com"

[gigs.blog]
venue = "example"
sess = "blog"
"""


def with_(*edits: tuple[str, str]) -> str:
    text = BASE
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


ACME_CA = '\n[host.acme]\ndirectory = "https://ca.test/dir"\n'


HOST_ADDRESS = '[host]\naddress = "192.0.2.10"\n'
PRODUCER = '[producer]\napi = "http://127.0.0.1:8081"\napi_key_file = "/etc/pdns.key"\n[producer.zones."example.com"]\n'


FLEET = '[hosts.web1]\naddress = "192.0.2.1"\n[hosts.web2]\naddress = "192.0.2.2"\n'


def add(extra: str) -> str:
    return BASE + "\n" + extra


# (id, production text with the offending line marked "# <-", code, key path)
CASES: list[tuple[str, str, str, str]] = [
    # Every reference names something that exists.
    ("ref-act", with_(('act = "blog"', 'act = "blgo" # <-')), "BS201", "sesses.blog.act"),
    ("ref-stage", with_(('stage = "main"\n\n[sesses.api]', 'stage = "mian" # <-\n\n[sesses.api]')),
     "BS201", "sesses.blog.stage"),
    ("ref-sess", with_(('sess = "blog"', 'sess = "blob" # <-')), "BS201", "gigs.blog.sess"),
    ("ref-venue", with_(('venue = "example"', 'venue = "exmaple" # <-')), "BS201", "gigs.blog.venue"),
    ("ref-needs", with_(('act = "blog"', 'act = "blog"\nneeds = ["apj"] # <-')), "BS201", "sesses.blog.needs[0]"),
    # Names of acts, stages, sesses, venues and gigs.
    ("name-act", with_(("[acts.api]", "[acts.API] # <-")), "BS103", "acts.API"),
    ("name-stage", add('[stages."../etc"] # <-\nvirtualenv = "/v"\n'), "BS103", 'stages."../etc"'),
    ("name-sess", add('[sesses.-x] # <-\nact = "blog"\nstage = "main"\n'), "BS103", "sesses.-x"),
    ("name-venue", add('[venues."a/b"] # <-\ndomain = "b.example.com"\n'), "BS103", 'venues."a/b"'),
    ("name-gig", add("[gigs." + "g" * 64 + "] # <-\nvenue = \"example\"\nsess = \"api\"\npath = \"/x/\"\n"),
     "BS103", "gigs." + "g" * 64),
    ("name-production", with_(('name = "club"', 'name = "Club" # <-')), "BS122", "production.name"),
    # Paths: absolute, normalised, no unsafe characters.
    ("path-relative", with_(('virtualenv = "/srv/venvs/main"', 'virtualenv = "srv/venvs" # <-')),
     "BS110", "stages.main.virtualenv"),
    ("path-dotdot", with_(('path = "/srv/apps/blog"', 'path = "/srv/../etc" # <-')), "BS110", "acts.blog.path"),
    ("path-double-slash", with_(('path = "/srv/apps/api"', 'path = "/srv//api" # <-')), "BS110", "acts.api.path"),
    ("path-space", add('[production.x]\n'.replace("[production.x]\n", "")) .replace(
        'name = "club"', 'name = "club"\nlog_dir = "/var/log/my logs" # <-'), "BS110", "production.log_dir"),
    ("path-semicolon", with_(('path = "/srv/apps/blog"', 'path = "/srv/a;b" # <-')), "BS110", "acts.blog.path"),
    ("path-brace", with_(('path = "/srv/apps/blog"', 'path = "/srv/a}b" # <-')), "BS110", "acts.blog.path"),
    ("path-dollar", with_(('path = "/srv/apps/blog"', 'path = "/srv/$x" # <-')), "BS110", "acts.blog.path"),
    ("path-percent", with_(('path = "/srv/apps/blog"', 'path = "/srv/%n" # <-')), "BS110", "acts.blog.path"),
    ("path-at-paren", with_(('path = "/srv/apps/blog"', 'path = "/srv/@(x)" # <-')), "BS110", "acts.blog.path"),
    ("path-quote", with_(('path = "/srv/apps/blog"', "path = '/srv/a\"b' # <-")), "BS110", "acts.blog.path"),
    ("path-control", with_(('path = "/srv/apps/blog"', 'path = "/srv/a\\u0007b" # <-')), "BS108", "acts.blog.path"),
    # Domains and aliases: lower-case LDH, claimed once.
    ("domain-upper", with_(('domain = "example.com"', 'domain = "Example.com" # <-')), "BS111",
     "venues.example.domain"),
    ("domain-unicode", with_(('domain = "example.com"', 'domain = "bücher.example" # <-')), "BS111",
     "venues.example.domain"),
    ("domain-twice", add('[venues.other]\ndomain = "example.com" # <-\n'), "BS202", "venues.other.domain"),
    ("alias-twice", add('[venues.other]\ndomain = "o.example.com"\naliases = [\n  "x.example.com",\n'
                        '  "example.com", # <-\n]\n'), "BS202", "venues.other.aliases[1]"),
    # Gig paths and static prefixes start and end with '/'; static directories too; one Gig per Venue+path.
    ("gig-path-no-slash", with_(('sess = "blog"', 'sess = "blog"\npath = "/blog" # <-')), "BS112",
     "gigs.blog.path"),
    ("static-prefix", with_(('path = "/srv/apps/blog"', 'path = "/srv/apps/blog"\nstatic = { "static" = "/s/" } # <-')),
     "BS112", 'acts.blog.static.static'),
    ("static-dir-slash", with_(('path = "/srv/apps/blog"',
                                'path = "/srv/apps/blog"\nstatic = { "/static/" = "/srv/static" } # <-')),
     "BS206", 'acts.blog.static."/static/"'),
    ("gig-same-path", add('[gigs.again]\nvenue = "example"\nsess = "api"\npath = "/" # <-\n'), "BS204",
     "gigs.again.path"),
    # Ports: unique, 1024-65535; listen a port or IPv4:PORT.
    ("port-low", with_(('stage = "main"\n\n[venues', 'stage = "main"\nport = 80 # <-\n\n[venues')), "BS104",
     "sesses.api.port"),
    ("port-twice", with_(('act = "blog"', 'act = "blog"\nport = 8100'),
                         ('stage = "main"\n\n[venues', 'stage = "main"\nport = 8100 # <-\n\n[venues')),
     "BS203", "sesses.api.port"),
    ("listen-bad", with_(('domain = "example.com"', 'domain = "example.com"\nlisten = "localhost:80" # <-')),
     "BS119", "venues.example.listen"),
    ("listen-range", with_(('domain = "example.com"', 'domain = "example.com"\nlisten = 70000 # <-')),
     "BS119", "venues.example.listen"),
    ("tls-and-plain-share-a-port", add('[venues.secure]\ndomain = "s.example.com"\nlisten = 80 # <-\n'
                                       'tls = { certificate = "/c.pem", key = "/k.pem" }\n'),
     "BS208", "venues.secure.listen"),
    ("static-at-gig-path", with_(('path = "/srv/apps/blog"',
                                  'path = "/srv/apps/blog"\nstatic = { "/" = "/srv/static/" }'),
                                 ('[gigs.blog]', '[gigs.blog] # <-')), "BS204", "gigs.blog"),
    ("name-double-dash", add('[sesses.a--b] # <-\nact = "blog"\nstage = "main"\n'), "BS103", "sesses.a--b"),
    ("path-glob", with_(('name = "club"', 'name = "club"\nstate_dir = "/srv/*" # <-')), "BS110",
     "production.state_dir"),
    ("requirement-continuation", with_(('virtualenv = "/srv/venvs/main"',
                                        'virtualenv = "/srv/venvs/main"\nrequirements = ["a\\\\"] # <-')),
     "BS121", "stages.main.requirements[0]"),
    ("env-sets-settings-twice", with_(('path = "/srv/apps/blog"', 'path = "/srv/apps/blog"\nsettings = "b.s"\n'
                                       'env = { DJANGO_SETTINGS_MODULE = "x.y" } # <-')),
     "BS113", "acts.blog.env.DJANGO_SETTINGS_MODULE"),
    ("env-sets-backstage-name", with_(('path = "/srv/apps/blog"',
                                       'path = "/srv/apps/blog"\nenv = { BACKSTAGE_HOSTS = "x" } # <-')),
     "BS113", "acts.blog.env.BACKSTAGE_HOSTS"),
    # needs forms no cycle.
    ("needs-cycle-2", with_(('act = "blog"', 'act = "blog"\nneeds = ["api"]'),
                            ('act = "api"\nstage', 'act = "api"\nneeds = ["blog"] # <-\nstage')),
     "BS205", "sesses.api.needs[0]"),
    ("needs-self", with_(('act = "blog"', 'act = "blog"\nneeds = ["blog"] # <-')), "BS205", "sesses.blog.needs[0]"),
    # env names and values.
    ("env-name", with_(('path = "/srv/apps/blog"', 'path = "/srv/apps/blog"\nenv = { "lower" = "x" } # <-')),
     "BS113", "acts.blog.env.lower"),
    ("env-value-newline", with_(('path = "/srv/apps/blog"', 'path = "/srv/apps/blog"\nenv = { A = "x\\ny" } # <-')),
     "BS114", "acts.blog.env.A"),
    ("env-value-nul", with_(('path = "/srv/apps/blog"', 'path = "/srv/apps/blog"\nenv = { A = "x\\u0000" } # <-')),
     "BS114", "acts.blog.env.A"),
    # the edge.
    ("redirect-without-tls", with_(('domain = "example.com"', 'domain = "example.com"\nredirect_http = true # <-')),
     "BS216", "venues.example.redirect_http"),
    ("http-listen-on-tls-port", with_(('domain = "example.com"',
                                      'domain = "example.com"\ntls = { certificate = "/c.pem", key = "/k.pem" }\n'
                                      'http_listen = 443 # <-')),
     "BS208", "venues.example.http_listen"),
    ("acme-without-host-acme", with_(('domain = "example.com"',
                                      'domain = "example.com"\ntls = { acme = true } # <-')),
     "BS218", "venues.example.tls.acme"),
    ("acme-and-files", with_(('domain = "example.com"',
                              'domain = "example.com"\ntls = { acme = true, key = "/k.pem" } # <-')) + ACME_CA,
     "BS217", "venues.example.tls.key"),
    ("acme-without-redirect", with_(('domain = "example.com"', 'domain = "example.com"\ntls = { acme = true }\n'
                                     'redirect_http = false # <-')) + ACME_CA,
     "BS218", "venues.example.redirect_http"),
    ("tls-without-key", with_(('domain = "example.com"', 'domain = "example.com"\ntls = { certificate = "/c" } # <-')),
     "BS217", "venues.example.tls"),
    ("acme-directory", add('[host.acme]\ndirectory = "ftp://ca.test" # <-\n'), "BS124", "host.acme.directory"),
    # the Producer.
    ("dns-no-address", add(PRODUCER + 'records = []\n').replace('domain = "example.com"',
                                                                 'domain = "example.com" # <-'),
     "BS220", "venues.example.domain"),
    ("dns-bad-mx", add(HOST_ADDRESS + PRODUCER + 'records = [{ name = "@", type = "MX", content = "10 mail" }] # <-\n'),
     "BS127", "producer.zones.\"example.com\".records[0].content"),
    ("dns-bad-a", add(HOST_ADDRESS + PRODUCER + 'records = [{ name = "x", type = "A", content = "1.2.3" }] # <-\n'),
     "BS127", "producer.zones.\"example.com\".records[0].content"),
    ("dns-txt-unquoted", add(HOST_ADDRESS + PRODUCER
                             + 'records = [{ name = "x", type = "TXT", content = "hi" }] # <-\n'),
     "BS127", "producer.zones.\"example.com\".records[0].content"),
    ("dns-outside-zone", add(HOST_ADDRESS + PRODUCER
                             + 'records = [{ name = "x.example.org.", type = "A", content = "192.0.2.1" }] # <-\n'),
     "BS219", "producer.zones.\"example.com\".records[0].name"),
    ("dns-venue-name-cname", add(HOST_ADDRESS + PRODUCER
                                 + 'records = [{ name = "@", type = "CNAME", content = "other.org." }] # <-\n'),
     "BS219", "producer.zones.\"example.com\".records[0].type"),
    ("dns-cname-beside-data", add(HOST_ADDRESS + PRODUCER
                                  + 'records = [{ name = "m", type = "MX", content = "10 mail.example.com." },\n'
                                  '  { name = "m", type = "CNAME", content = "other.org." }] # <-\n'),
     "BS219", "producer.zones.\"example.com\".records[1].type"),
    ("dns-api", add('[producer]\napi = "ftp://x" # <-\napi_key_file = "/k"\nzones = {}\n'), "BS126", "producer.api"),
    ("dns-address6", add('[host]\naddress6 = "2001:db8::zz" # <-\n'), "BS124", "host.address6"),
    # several hosts.
    ("hosts-unknown", add(FLEET).replace('act = "api"\nstage = "main"',
                                         'act = "api"\nstage = "main"\nhosts = ["web9"] # <-'),
     "BS201", "sesses.api.hosts[0]"),
    ("hosts-without-hosts", with_(('act = "api"\nstage = "main"', 'act = "api"\nstage = "main"\nhosts = ["a"] # <-')),
     "BS221", "sesses.api.hosts"),
    ("venue-host-without-sess", add(FLEET).replace('act = "blog"\nstage = "main"',
                                                   'act = "blog"\nstage = "main"\nhosts = ["web1"]')
     .replace('domain = "example.com"', 'domain = "example.com"\nhosts = ["web1", "web2"] # <-'),
     "BS221", "venues.example.hosts"),
    ("needs-across-hosts", add(FLEET).replace('act = "api"\nstage = "main"',
                                              'act = "api"\nstage = "main"\nhosts = ["web1"]')
     .replace('act = "blog"\nstage = "main"', 'act = "blog"\nstage = "main"\nneeds = ["api"] # <-'),
     "BS221", "sesses.blog.needs[0]"),
    ("hosts-same-address", add('[hosts.web1]\naddress = "192.0.2.1"\n[hosts.web2]\naddress = "192.0.2.1" # <-\n'),
     "BS128", "hosts.web2.address"),
    ("body-size", with_(('domain = "example.com"', 'domain = "example.com"\nclient_max_body_size = "10 MB" # <-')),
     "BS125", "venues.example.client_max_body_size"),
    ("read-timeout", with_(('sess = "blog"', 'sess = "blog"\nread_timeout = 0 # <-')),
     "BS104", "gigs.blog.read_timeout"),
    # secrets and data.
    ("secret-name", with_(('path = "/srv/apps/blog"', 'path = "/srv/apps/blog"\nsecrets = { "key" = "/etc/k" } # <-')),
     "BS113", "acts.blog.secrets.key"),
    ("secret-path", with_(('path = "/srv/apps/blog"', 'path = "/srv/apps/blog"\nsecrets = { KEY = "k.txt" } # <-')),
     "BS110", "acts.blog.secrets.KEY"),
    ("secret-and-env", with_(('path = "/srv/apps/blog"',
                              'path = "/srv/apps/blog"\nenv = { KEY = "x" }\nsecrets = { KEY = "/etc/k" } # <-')),
     "BS214", "acts.blog.secrets.KEY"),
    ("data-relative", with_(('path = "/srv/apps/blog"', 'path = "/srv/apps/blog"\ndata = "var/blog" # <-')),
     "BS110", "acts.blog.data"),
    ("data-in-state-dir", with_(('path = "/srv/apps/blog"',
                                 'path = "/srv/apps/blog"\ndata = "/var/lib/backstage/club/data" # <-')),
     "BS215", "acts.blog.data"),
    # uWSGI pass-through options.
    ("uwsgi-name", add("[sesses.blog.uwsgi]\n\"Max_Requests\" = 5 # <-\n"), "BS115", "sesses.blog.uwsgi.Max_Requests"),
    ("uwsgi-reserved", add("[sesses.blog.uwsgi]\nsocket = \"/tmp/x.sock\" # <-\n"), "BS116",
     "sesses.blog.uwsgi.socket"),
    ("uwsgi-exec", add("[stages.main.uwsgi]\nexec-as-root = \"id\" # <-\n"), "BS116",
     "stages.main.uwsgi.exec-as-root"),
    ("uwsgi-hook", add("[sesses.blog.uwsgi]\nhook-pre-app = \"exec:id\" # <-\n"), "BS116",
     "sesses.blog.uwsgi.hook-pre-app"),
    ("uwsgi-protocol", add("[sesses.blog.uwsgi]\nsocket-protocol = \"http\" # <-\n"), "BS116",
     "sesses.blog.uwsgi.socket-protocol"),
    ("uwsgi-value-type", add("[sesses.blog.uwsgi]\nharakiri = 1.5 # <-\n"), "BS100", "sesses.blog.uwsgi.harakiri"),
    ("uwsgi-value-expansion", add("[sesses.blog.uwsgi]\nprocname = \"@(/etc/passwd)\" # <-\n"), "BS117",
     "sesses.blog.uwsgi.procname"),
    # Unknown keys, wrong types, missing keys.
    ("unknown-key", with_(('act = "blog"', 'act = "blog"\nprocesess = 2 # <-')), "BS101",
     "sesses.blog.procesess"),
    ("wrong-type", with_(('act = "blog"', 'act = "blog"\nprocesses = "4" # <-')), "BS100", "sesses.blog.processes"),
    ("missing-key", with_(('[acts.api]\nwsgi = "api.wsgi"\n', '[acts.api] # <-\n')), "BS102", "acts.api"),
    # Unix socket paths must fit sun_path.
    ("socket-too-long", with_(('name = "club"', 'name = "club"\nrun_dir = "/' + "r" * 90 + '"'),
                              ("[sesses.api]", "[sesses.api] # <-")),
     "BS207", "sesses.api"),
]


def diagnostics(text: str, tmp_path: Path) -> list[Diagnostic]:
    path = tmp_path / "production.toml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        pipeline.check_file(path)
    return caught.value.diagnostics


def marked_line(text: str) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), 1) if line.rstrip().endswith("# <-")]
    assert len(lines) == 1
    return lines[0]


def test_the_base_production_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "production.toml"
    path.write_text(BASE)
    pipeline.check_file(path)


@pytest.mark.parametrize(("text", "code", "key_path"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_violation_is_reported_with_code_line_and_path(text: str, code: str, key_path: str,
                                                             tmp_path: Path) -> None:
    found = diagnostics(text, tmp_path)
    matching = [d for d in found if d.code == code and d.path == key_path]
    assert matching, f"expected {code} at {key_path}, got:\n" + "\n".join(map(str, found))
    assert matching[0].line == marked_line(text)
    assert code in CODES


def test_misspelt_keys_and_references_get_did_you_mean(tmp_path: Path) -> None:
    found = diagnostics(with_(('act = "blog"', 'act = "blgo"\nprocesess = 2')), tmp_path)
    hints = {d.code: d.hint for d in found}
    assert hints["BS101"] == "did you mean `processes`?"
    assert hints["BS201"] == "did you mean `blog`?"


def test_all_errors_are_reported_at_once_sorted_by_line(tmp_path: Path) -> None:
    text = with_(('name = "club"', 'name = "Club"'), ('domain = "example.com"', 'domain = "EXAMPLE"'),
                 ('sess = "blog"', 'sess = "nope"'))
    found = diagnostics(text, tmp_path)
    assert [d.code for d in found] == ["BS122", "BS111", "BS201"]
    assert [d.line for d in found] == sorted(d.line for d in found)


def test_error_format_is_file_line_col_code_path_message(tmp_path: Path) -> None:
    found = diagnostics(with_(('act = "blog"', 'act = "blgo"')), tmp_path)
    first = str(found[0]).splitlines()
    assert first[0] == f"{tmp_path / 'production.toml'}:16:1: BS201 sesses.blog.act: no act named `blgo`"
    assert first[1] == "    hint: did you mean `blog`?"
