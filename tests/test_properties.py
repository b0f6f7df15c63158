"""Property tests: generated productions compile to exactly what they declare, and nothing else.

1. test_valid_productions_render_exactly: productions drawn from the schema's own patterns (see
   strategies.py) that pass check() are rendered in-process; every nginx file is read back with
   nginx's tokenizer and every vassal with uWSGI's ini rules (parse_back.py) and must equal the
   structure computed here, independently of the compiler, from the production: no directive,
   option or argument more or less. Every nginx file also goes through a real `nginx -t`, in
   batches (listen ports remapped per production so productions cannot clash).
2. test_arbitrary_strings_never_slip_through: one string field of a rich, valid base production is
   replaced by an arbitrary string. The result is either a clean InputError or output that equals
   the same independent expectation (so only that value changed, where the field belongs).

Profiles (registered in conftest.py): "ci" (2,000 examples, the default) and "thorough" (10,000):
`pytest tests/test_properties.py --hypothesis-profile=thorough`.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import crossplane  # type: ignore[import-untyped]
import pytest
import strategies as S
from backstage import errors
from backstage.errors import InputError
from backstage.phases import pipeline
from hypothesis import given, note, reject
from hypothesis import strategies as st
from parse_back import Directive, ParseError, nginx_tokens, parse_nginx, parse_requirements, parse_uwsgi_ini, unescape

Data = dict[str, Any]
D = Directive
NGINX = "/usr/sbin/nginx"
REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------ compiling

def compile_text(text: str) -> dict[str, str]:
    """The whole pipeline, in-process; InputError propagates. The agent and manifest are left out."""
    files = pipeline.compile_bytes(text.encode(), "production.toml").files
    return {path: f.content.decode() for path, f in files.items() if path not in ("agent.pyz", "manifest.json")}


# ------------------------------------------------------------------------------------------ expectation
# Everything below is computed from the production as the contract describes it, never from the
# compiler's model or templates. Only the content hash in vassal names is taken from the output
# (it cannot be predicted), after checking its format.

UWSGI_PARAMS = (
    ("QUERY_STRING", "$query_string"), ("REQUEST_METHOD", "$request_method"),
    ("CONTENT_TYPE", "$content_type"), ("CONTENT_LENGTH", "$content_length"),
    ("REQUEST_URI", "$request_uri"), ("PATH_INFO", "$document_uri"), ("DOCUMENT_ROOT", "$document_root"),
    ("SERVER_PROTOCOL", "$server_protocol"), ("REQUEST_SCHEME", "$scheme"), ("HTTPS", "$https", "if_not_empty"),
    ("REMOTE_ADDR", "$remote_addr"), ("REMOTE_PORT", "$remote_port"), ("SERVER_PORT", "$server_port"),
    ("SERVER_NAME", "$server_name"),
)
PROXY_HEADERS = (("Host", "$host"), ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
                 ("X-Forwarded-Proto", "$scheme"))


def _slashes(path: str) -> str:
    return re.sub("/+", "/", path)


def _dirs(data: Data) -> dict[str, str]:
    head = data["production"]
    name = head["name"]
    defaults = {"state_dir": f"/var/lib/backstage/{name}", "run_dir": f"/run/backstage/{name}",
                "log_dir": f"/var/log/backstage/{name}"}
    return {key: head.get(key, value) for key, value in defaults.items()}


def _regex_placeholder(prefix: str) -> str:
    return f"<regex capturing the rest of {prefix}>"


def _check_prefix_regex(regex: str, prefix: str) -> None:
    """The rewrite regex must match `prefix` + anything and capture '/' + anything, nothing else."""
    compiled = re.compile(regex)
    for rest in ("", "q/r", "a b/%2F"):
        m = compiled.match(prefix + rest)
        assert m and m.group(1) == "/" + rest, f"rewrite {regex!r} does not strip {prefix!r} from {prefix + rest!r}"
    assert not compiled.match("/zz" + prefix), f"rewrite {regex!r} is not anchored"
    if len(prefix) > 2:
        other = prefix[0] + ("b" if prefix[1] == "a" else "a") + prefix[2:]
        assert not compiled.match(other + "x"), f"rewrite {regex!r} for {prefix!r} also matches {other!r}"


@dataclass
class Vassals:
    """The vassal files of one output, keyed by Sess name, with their binds."""

    files: dict[str, str] = field(default_factory=dict)
    binds: dict[str, str] = field(default_factory=dict)
    environments: dict[str, str] = field(default_factory=dict)  # the `virtualenv` each vassal names
    entries: dict[str, str] = field(default_factory=dict)  # the `wsgi-file` each vassal loads
    options: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def _vassals(data: Data, files: dict[str, str]) -> Vassals:
    prod = data["production"]["name"]
    sesses: Data = data.get("sesses", {})
    run_dir = _dirs(data)["run_dir"]
    found = Vassals()
    stems = {path[len("uwsgi/"):-len(".ini")]: path for path in files
             if path.startswith("uwsgi/") and path.endswith(".ini")}
    for sess_name, sess in sesses.items():
        stem_re = re.compile(re.escape(f"{prod}--{sess_name}--") + "[0-9a-f]{8}")
        mine = [stem for stem in stems if stem_re.fullmatch(stem)]
        assert len(mine) == 1, f"sess {sess_name!r}: vassal files {mine} among {sorted(stems)}"
        stem = mine[0]
        options = parse_uwsgi_ini(files[stems.pop(stem)])
        for option in options:
            assert option.has_equals and option.key, f"{stem}: line {option.line} is not `key = value`"
        pairs = [(o.key, o.value) for o in options]
        binds = [v for k, v in pairs if k in ("socket", "http-socket")]
        assert len(binds) == 1, f"{stem}: binds {binds}"
        bind = binds[0]
        if "port" in sess:
            assert bind == f"127.0.0.1:{sess['port']}", f"{stem}: bind {bind!r}"
        else:
            assert _slashes(bind) == _slashes(f"{run_dir}/{stem}.sock"), f"{stem}: bind {bind!r}"
            assert len(bind.encode()) <= 107, f"{stem}: socket path is {len(bind.encode())} bytes"
        stage_name = sess["stage"]
        stage = data["stages"][stage_name]
        environments = [v for k, v in pairs if k == "virtualenv"]
        assert len(environments) == 1, f"{stem}: virtualenv {environments}"
        if "virtualenv" not in stage:  # built by backstage: its store path, named by a hash of its inputs
            store = re.escape(_slashes(f"{_dirs(data)['state_dir']}/store/stage-{stage_name}-")) + "[0-9a-f]{32}"
            assert re.fullmatch(store, _slashes(environments[0])), f"{stem}: virtualenv {environments[0]!r}"
        found.environments[sess_name] = environments[0]
        entries = [v for k, v in pairs if k == "wsgi-file"]
        entry = re.escape(_slashes(f"{_dirs(data)['state_dir']}/store/entry-{sess_name}-")) + "[0-9a-f]{32}/wsgi\\.py"
        assert len(entries) == 1 and re.fullmatch(entry, _slashes(entries[0])), f"{stem}: wsgi-file {entries}"
        found.entries[sess_name] = entries[0]
        found.files[sess_name] = stem
        found.binds[sess_name] = bind
        found.options[sess_name] = pairs
    assert not stems, f"vassal files for no declared sess: {sorted(stems)}"
    return found


def _address(sess: Data, bind: str) -> str:
    return bind if "port" in sess else f"unix:{bind}"


def _upstream(sess: Data, bind: str) -> str:
    if sess.get("protocol", "uwsgi") == "http":
        return f"http://{bind}/" if "port" in sess else f"http://unix:{bind}:/"
    return _address(sess, bind)


def _scalar(value: bool | int | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def expected_ini(data: Data, sess_name: str, vassals: Vassals) -> list[tuple[str, str]]:
    sess = data["sesses"][sess_name]
    stage = data["stages"][sess["stage"]]
    act = data["acts"][sess["act"]]
    host = data.get("host", {})
    nginx_user = host.get("nginx_user", "www-data")
    options: dict[str, bool | int | str] = {**stage.get("uwsgi", {}), **sess.get("uwsgi", {})}
    counts = {key: sess.get(key, options.pop(key, 1)) for key in ("processes", "threads")}
    out = [("strict", "true"), ("master", "true"), ("processes", str(counts["processes"])),
           ("threads", str(counts["threads"])),
           ("virtualenv", stage.get("virtualenv", vassals.environments[sess_name])),
           ("chdir", act["path"]),
           ("pythonpath", act["path"]), ("wsgi-file", vassals.entries[sess_name]),
           ("http-socket" if sess.get("protocol") == "http" else "socket", vassals.binds[sess_name])]
    if "port" not in sess:
        out += [("chmod-socket", "660"), ("chown-socket", f"{stage.get('uid', nginx_user)}:{nginx_user}")]
    out += [("listen", "1024"), ("vacuum", "true"), ("die-on-term", "true"), ("need-app", "true")]
    out.append(("logto", _slashes(f"{_dirs(data)['log_dir']}/{sess_name}.log")))
    out += [(key, stage[key]) for key in ("uid", "gid") if key in stage]
    out += [(key, _scalar(value)) for key, value in options.items()]
    return out


def expected_environment(data: Data, sess_name: str, vassals: Vassals) -> Data:
    """environment.json of a Sess's entry point: the Act's env and backstage's variables, exactly."""
    sess = data["sesses"][sess_name]
    act = data["acts"][sess["act"]]
    wsgi = act["wsgi"] if ":" in act["wsgi"] else act["wsgi"] + ":application"
    env = [(k, v) for k, v in act.get("env", {}).items()]
    if "settings" in act:
        env.append(("DJANGO_SETTINGS_MODULE", act["settings"]))
    hosts = set()
    for gig in data.get("gigs", {}).values():
        if gig["sess"] == sess_name:
            venue = data["venues"][gig["venue"]]
            hosts |= {venue["domain"], *venue.get("aliases", [])}
    if hosts:
        env.append(("BACKSTAGE_HOSTS", " ".join(sorted(hosts))))
    for needed in sess.get("needs", []):
        prefix = "BACKSTAGE_" + needed.upper().replace("-", "_")
        env.append((f"{prefix}_ADDRESS", _address(data["sesses"][needed], vassals.binds[needed])))
        env.append((f"{prefix}_PROTOCOL", data["sesses"][needed].get("protocol", "uwsgi")))
    return {"app": wsgi, "env": dict(env), "secrets": act.get("secrets", {})}


def canonical_ini(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for key, value in pairs:
        if key == "logto":
            value = _slashes(value)
        out.append((key, value))
    return sorted(out)


# Mozilla's "intermediate" TLS configuration, as the contract names it.
MOZILLA_INTERMEDIATE = [
    ("ssl_protocols", ("TLSv1.2", "TLSv1.3")),
    ("ssl_ciphers", ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                     "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                     "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305",)),
    ("ssl_prefer_server_ciphers", ("off",)),
    ("ssl_session_timeout", ("1d",)),
    ("ssl_session_cache", ("shared:backstage_tls:10m",)),
    ("ssl_session_tickets", ("off",)),
]
NO_DOTFILES = D("location", ("~", "/\\."), (D("return", ("404",)),))


def expected_redirect(data: Data, venue_name: str) -> Directive | None:
    """A TLS Venue's plain-HTTP side: the ACME challenge from state_dir/acme, everything else 301 to https."""
    venue = data["venues"][venue_name]
    if "tls" not in venue or venue.get("redirect_http", True) is not True:
        return None
    listen = venue.get("listen", 443)
    port = listen if isinstance(listen, int) else int(str(listen).rsplit(":", 1)[1])
    target = "https://$host" + ("" if port == 443 else f":{port}") + "$request_uri"
    acme = (D("root", (_slashes(f"{_dirs(data)['state_dir']}/acme"),)), D("default_type", ("text/plain",)))
    locations = [D("location", ("/",), (D("return", ("301", target)),)),
                 D("location", ("/.well-known/acme-challenge/",), acme)]
    return D("server", (), (D("listen", (str(venue.get("http_listen", 80)),)),
                            D("server_name", (venue["domain"], *venue.get("aliases", []))),
                            D("server_tokens", ("off",)), *sorted(locations, key=repr)))


def expected_server(data: Data, venue_name: str, vassals: Vassals) -> Directive:
    venue = data["venues"][venue_name]
    tls = venue.get("tls")
    listen = venue.get("listen", 443 if tls else 80)
    head = [D("listen", (str(listen), "ssl", "http2") if tls else (str(listen),)),
            D("server_name", (venue["domain"], *venue.get("aliases", []))),
            D("server_tokens", ("off",))]
    hsts = ("Strict-Transport-Security", f"max-age={venue['hsts']}", "always") if tls and venue.get("hsts") else None
    if tls:
        head += [D("ssl_certificate", (tls["certificate"],)), D("ssl_certificate_key", (tls["key"],))]
        head += [D(name, args) for name, args in MOZILLA_INTERMEDIATE]
    if hsts:
        head.append(D("add_header", hsts))
    if "client_max_body_size" in venue:
        head.append(D("client_max_body_size", (venue["client_max_body_size"],)))
    locations: list[Directive] = []
    for gig in data.get("gigs", {}).values():
        if gig["venue"] != venue_name:
            continue
        sess = data["sesses"][gig["sess"]]
        path = gig.get("path", "/")
        upstream = _upstream(sess, vassals.binds[gig["sess"]])
        limits = [D("client_max_body_size", (gig["client_max_body_size"],))] if "client_max_body_size" in gig else []
        timeout = gig.get("read_timeout", venue.get("read_timeout"))
        if sess.get("protocol", "uwsgi") == "http":
            body = [D("proxy_set_header", h) for h in PROXY_HEADERS]
            body += [D("proxy_set_header", ("X-Forwarded-Prefix", path.rstrip("/"))), *limits]
            body += [D("proxy_read_timeout", (f"{timeout}s",))] if timeout else []
            body += [D("proxy_pass", (upstream,))]
        else:
            body = [D("rewrite", (_regex_placeholder(path), "$1", "break"))] if path != "/" else []
            body += [*limits, *([D("uwsgi_read_timeout", (f"{timeout}s",))] if timeout else [])]
            body += [D("uwsgi_param", p) for p in UWSGI_PARAMS]
            body += [D("uwsgi_param", ("SCRIPT_NAME", path.rstrip("/"))), D("uwsgi_pass", (upstream,))]
        locations.append(D("location", (path,), tuple(body)))
        for prefix, directory in data["acts"][sess["act"]].get("static", {}).items():
            locations.append(D("location", (path + prefix[1:],), (D("alias", (directory,)), NO_DOTFILES)))
    if not locations:
        locations.append(D("location", ("/",), (D("default_type", ("text/plain",)), D("return", ("503", "closed\n")))))
    elif not any(loc.args == ("/",) for loc in locations):
        locations.append(D("location", ("/",), (D("return", ("404",)),)))
    return D("server", (), tuple(head) + tuple(sorted(locations, key=repr)))


def canonical_server(server: Directive) -> Directive:
    """Locations in a stable order (prefix locations match by length, not order); rewrite regexes
    checked for their meaning, then replaced by a placeholder."""
    assert server.block is not None
    head = [d for d in server.block if d.name != "location"]
    locations = []
    for loc in server.block:
        if loc.name != "location":
            continue
        assert loc.block is not None, "a location without a block"
        body = []
        for d in loc.block:
            if d.name == "rewrite" and len(d.args) == 3 and len(loc.args) == 1:
                _check_prefix_regex(d.args[0], loc.args[0])
                d = D("rewrite", (_regex_placeholder(loc.args[0]), *d.args[1:]))
            body.append(d)
        locations.append(D("location", loc.args, tuple(body)))
    paths = Counter(loc.args for loc in locations)
    duplicated = [args for args, n in paths.items() if n > 1]
    assert not duplicated, f"duplicate location {duplicated}: nginx refuses the file"
    return D("server", (), tuple(head) + tuple(sorted(locations, key=repr)))


def _canonical_roots(server: Directive) -> Directive:
    """The plain side with its ACME root's slashes normalised, as every other path here."""
    def fix(d: Directive) -> Directive:
        if d.name == "location" and d.block is not None:
            return D("location", d.args, tuple(D("root", (_slashes(x.args[0]),)) if x.name == "root" else x
                                                for x in d.block))
        return d
    return D("server", (), tuple(fix(d) for d in server.block or ()))


def check_outputs(data: Data, files: dict[str, str]) -> None:
    """Every output file reads back as exactly what `data` declares."""
    vassals = _vassals(data, files)
    for sess_name in data.get("sesses", {}):
        want = canonical_ini(expected_ini(data, sess_name, vassals))
        got = canonical_ini(vassals.options[sess_name])
        assert got == want, _diff(f"vassal of sess {sess_name!r}", want, got)
        environment = json.loads(files[f"entries/{sess_name}/environment.json"])
        hosts = environment["env"].get("BACKSTAGE_HOSTS")
        if hosts is not None:
            words = hosts.split(" ")
            assert len(words) == len(set(words)), f"BACKSTAGE_HOSTS repeats a host: {hosts!r}"
            environment["env"]["BACKSTAGE_HOSTS"] = " ".join(sorted(words))
        assert environment == expected_environment(data, sess_name, vassals), f"environment of {sess_name!r}"

    venues: Data = data.get("venues", {})
    nginx_files = {p for p in files if p.startswith("nginx/")}
    assert nginx_files == {f"nginx/{v}.conf" for v in venues}, f"nginx files {sorted(nginx_files)}"
    for venue_name in venues:
        same_tokens_as_crossplane(files[f"nginx/{venue_name}.conf"])
        parsed = parse_nginx(files[f"nginx/{venue_name}.conf"])
        redirect = expected_redirect(data, venue_name)
        assert [d.name for d in parsed] == ["server"] * (2 if redirect else 1), f"venue {venue_name!r}: {parsed}"
        if redirect:
            plain = _canonical_roots(canonical_server(parsed[0]))
            assert plain == redirect, _diff(f"plain side of {venue_name!r}", list(redirect.block or ()),
                                                             list(plain.block or ()))
        got = canonical_server(parsed[-1])
        want = expected_server(data, venue_name, vassals)
        assert got == want, _diff(f"server of venue {venue_name!r}", list(want.block or ()), list(got.block or ()))

    state_dir = _dirs(data)["state_dir"]
    include = parse_nginx(files["include.conf"])
    assert len(include) == 1 and include[0].name == "include" and len(include[0].args) == 1, include
    assert _slashes(include[0].args[0]) == _slashes(f"{state_dir}/current/nginx/*.conf"), include
    glob = set("*?[") & set(state_dir)
    assert not glob, (f"state_dir {state_dir!r} holds glob characters {sorted(glob)}: include.conf's "
                      f"pattern then matches other directories, or not the production's own")

    want_files = {"include.conf", *(f"nginx/{v}.conf" for v in venues),
                  *(f"uwsgi/{stem}.ini" for stem in vassals.files.values())}
    for stage_name, stage in data.get("stages", {}).items():
        if "requirements" in stage:
            path = f"stages/{stage_name}/requirements.txt"
            want_files.add(path)
            got_reqs = parse_requirements(files[path])
            assert got_reqs == stage["requirements"], _diff(f"requirements of {stage_name}",
                                                            stage["requirements"], got_reqs)
    # Other files (apply.json, install scripts) are data for `apply`, not read by nginx or uWSGI.
    ours = {p for p in files if p == "include.conf" or p.startswith(("nginx/", "uwsgi/", "stages/"))}
    assert ours == want_files, f"unexpected files {sorted(ours ^ want_files)}"


def _diff(what: str, want: list[Any], got: list[Any]) -> str:
    missing = [x for x in want if x not in got]
    extra = [x for x in got if x not in want]
    return f"{what} differs from the production:\n  declared but missing: {missing}\n  not declared: {extra}"


# ------------------------------------------------------------------------------------------ nginx -t

_LISTEN = re.compile(r"^(\s*listen\s+)(\S+?)((?:\s+ssl)?(?:\s+http2)?;)$", re.M)
_CERT = re.compile(r"^(\s*)(ssl_certificate(?:_key)?) .*;$", re.M)


@dataclass
class Pending:
    label: str
    toml: str
    files: dict[str, str]
    stub_certificates: bool


class NginxRunner:
    """Real `nginx -t` over many productions at once; a failing batch is split to name the culprit."""

    def __init__(self, workdir: Path, batch: int = 40) -> None:
        self.workdir = workdir
        self.batch = batch
        self.pending: list[Pending] = []
        self.rejected: list[tuple[Pending, str]] = []
        self.runs = 0
        self.validated = 0
        self.cert, self.key = workdir / "stub.pem", workdir / "stub.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", "/CN=test", "-keyout", str(self.key), "-out", str(self.cert)],
                       check=True, capture_output=True)

    @property
    def tls(self) -> tuple[str, str]:
        return str(self.cert), str(self.key)

    def add(self, label: str, toml: str, files: dict[str, str], stub_certificates: bool = False) -> None:
        self.pending.append(Pending(label, toml, files, stub_certificates))
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        ok, err = self._run(batch)
        if ok:
            self.validated += len(batch)
            return
        for one in batch:
            ok, err = self._run([one])
            if ok:
                self.validated += 1
            else:
                self.rejected.append((one, err))

    def _run(self, batch: list[Pending]) -> tuple[bool, str]:
        self.runs += 1
        sites = self.workdir / "sites"
        if sites.exists():
            for old in sites.iterdir():
                old.unlink()
        sites.mkdir(exist_ok=True)
        port = iter(range(10000, 65536))
        for index, pending in enumerate(batch):
            ports: dict[str, int] = {}
            addresses: dict[str, str] = {}

            def remap(m: re.Match[str], ports: dict[str, int] = ports, addresses: dict[str, str] = addresses) -> str:
                # `nginx -t` binds listen addresses: each port becomes a free one, each IPv4 address
                # a loopback one, keeping which venues share an address and a port.
                address, _, number = m[2].rpartition(":")
                if number not in ports:
                    ports[number] = next(port)
                if address and address not in addresses:
                    addresses[address] = f"127.0.0.{len(addresses) + 1}"
                return f"{m[1]}{addresses[address] + ':' if address else ''}{ports[number]}{m[3]}"

            for path, text in pending.files.items():
                if not (path.startswith("nginx/") or path == "include.conf"):
                    continue
                text = _LISTEN.sub(remap, text)
                if pending.stub_certificates:
                    text = _CERT.sub(lambda m: f"{m[1]}{m[2]} {self.cert if m[2] == 'ssl_certificate' else self.key};",
                                     text)
                target = sites / f"p{index}-{path.replace('/', '-')}"
                target.write_text(text)
        main = self.workdir / "nginx.conf"
        main.write_text(f"""
pid {self.workdir}/nginx.pid;
error_log {self.workdir}/error.log warn;
events {{}}
http {{
    client_body_temp_path {self.workdir}/client_body;
    proxy_temp_path {self.workdir}/proxy;
    uwsgi_temp_path {self.workdir}/uwsgi;
    fastcgi_temp_path {self.workdir}/fastcgi;
    scgi_temp_path {self.workdir}/scgi;
    access_log off;
    include {sites}/*.conf;
}}
""")
        done = subprocess.run([NGINX, "-t", "-q", "-p", str(self.workdir), "-c", str(main)],
                              capture_output=True, text=True)
        return done.returncode == 0, done.stderr.strip()

    def report(self) -> str:
        kinds = Counter(re.sub(r"(^.*?\[emerg\] [0-9#]+: )|( in /\S+)|\d+", "", err.splitlines()[0])
                        for _, err in self.rejected)
        lines = [f"{len(self.rejected)} production(s) refused by nginx -t: {dict(kinds)}"]
        for pending, err in self.rejected[:5]:
            lines += [f"--- {pending.label}: {err}", pending.toml]
        return "\n".join(lines)


def same_tokens_as_crossplane(text: str) -> None:
    """Cross-check parse_back's tokenizer against crossplane's lexer, an independent port of nginx's.

    crossplane keeps backslash escapes (it only drops the one before a quote), so its words are
    compared after nginx's unescaping step; comments are nginx-irrelevant and skipped."""
    theirs = [(unescape(value) if quoted or "\\" in value else value, quoted)
              for value, _, quoted in crossplane.lexer._lex_file_object(io.StringIO(text))
              if quoted or not value.startswith("#")]
    ours = [(t, False) if isinstance(t, str) else (t.text, t.quoted) for t in nginx_tokens(text)]
    assert ours == theirs, f"parse_back and crossplane split this nginx file differently:\n{text}"


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> NginxRunner:
    if not Path(NGINX).exists():
        pytest.fail(f"{NGINX} is not installed")
    return NginxRunner(tmp_path_factory.mktemp("nginx-t"))


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    examples: int = 0
    accepted: int = 0
    in_body: float = 0.0  # seconds spent compiling and checking, the rest is drawing and shrinking
    refused: Counter[str] = field(default_factory=Counter)

    def line(self, name: str, nginx: NginxRunner) -> str:
        return (f"{name}: {self.examples} examples, {self.accepted} compiled, refused by check: "
                f"{dict(self.refused.most_common(8))}; nginx -t validated {nginx.validated} in {nginx.runs} runs; "
                f"{time.monotonic() - self.started:.1f}s ({self.in_body:.1f}s compiling and checking)")


# ------------------------------------------------------------------------------------------ property 1

def test_valid_productions_render_exactly(nginx: NginxRunner) -> None:
    stats = Stats()

    @given(data=S.productions(nginx.tls))
    def valid_productions_render_exactly(data: Data) -> None:
        stats.examples += 1
        started = time.monotonic()
        try:
            body(data)
        finally:
            stats.in_body += time.monotonic() - started

    def body(data: Data) -> None:
        text = S.to_toml(data)
        note(text)
        try:
            files = compile_text(text)
        except InputError as exc:
            stats.refused.update(d.code for d in exc.diagnostics)
            reject()
        stats.accepted += 1
        check_outputs(data, files)
        nginx.add(f"example {stats.examples}", text, files)

    valid_productions_render_exactly()
    nginx.flush()
    print("\n" + stats.line("property 1", nginx))
    assert not nginx.rejected, nginx.report()
    assert stats.accepted >= stats.examples // 2, f"the strategy mostly draws invalid productions: {stats.refused}"


# ------------------------------------------------------------------------------------------ property 2

def base_production(tls: tuple[str, str]) -> Data:
    return {
        "production": {"name": "jazz", "state_dir": "/var/lib/b/jazz", "run_dir": "/run/b/jazz",
                       "log_dir": "/var/log/b/jazz"},
        "host": {"vassals_dir": "/etc/uwsgi/vassals", "nginx_dir": "/etc/nginx/sites-enabled", "nginx": ["nginx"],
                 "nginx_user": "www-data", "emperor_stats": "127.0.0.1:9191"},
        "stages": {"main": {"requirements": ["Django>=5.2,<6"], "uid": "app",
                            "gid": "app", "uwsgi": {"harakiri": 30, "cheaper-algo": "spare"}},
                   "legacy": {"virtualenv": "/srv/venvs/main"}},
        "acts": {
            "blog": {"wsgi": "blog.wsgi:application", "path": "/srv/apps/blog", "settings": "blog.settings",
                     "env": {"BLOG_THEME": "dark"}, "static": {"/static/": "/srv/apps/blog/static/"},
                     "health": "/healthz"},
            "api": {"wsgi": "api.wsgi", "path": "/srv/apps/api"},
        },
        "sesses": {
            "blog": {"act": "blog", "stage": "main", "needs": ["api"],
                     "uwsgi": {"max-requests": 1000, "procname-prefix": "blog"}},
            "api": {"act": "api", "stage": "legacy", "protocol": "http", "port": 8101},
        },
        "venues": {
            "example": {"domain": "example.com", "aliases": ["www.example.com"],
                        "tls": {"certificate": tls[0], "key": tls[1]}},
            "internal": {"domain": "internal.example.com", "listen": "127.0.0.1:8080"},
        },
        "gigs": {
            "blog-live": {"venue": "example", "sess": "blog", "path": "/"},
            "api-live": {"venue": "example", "sess": "api", "path": "/api/"},
            "blog-preview": {"venue": "internal", "sess": "blog", "path": "/preview/"},
        },
    }


Mutation = Callable[[Data, str], None]


def _set(*where: str | int) -> Mutation:
    def mutate(data: Data, value: str) -> None:
        node: Any = data
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = value
    return mutate


def _rename_key(*where: str, old: str) -> Mutation:
    """Replace one key of a table, keeping its value (env names, option names, static prefixes)."""
    def mutate(data: Data, value: str) -> None:
        node: Any = data
        for key in where:
            node = node[key]
        items = list(node.items())
        node.clear()
        node.update((value if k == old else k, v) for k, v in items)
    return mutate


def _rename(kind: str, old: str) -> Mutation:
    """Rename a named table and every reference to it, so only the name itself changes."""
    refs = {"acts": [("sesses", "act")], "stages": [("sesses", "stage")],
            "sesses": [("gigs", "sess"), ("sesses", "needs")], "venues": [("gigs", "venue")], "gigs": []}[kind]

    def mutate(data: Data, value: str) -> None:
        _rename_key(kind, old=old)(data, value)
        for table, key in refs:
            for item in data[table].values():
                if item.get(key) == old:
                    item[key] = value
                elif isinstance(item.get(key), list):
                    item[key] = [value if x == old else x for x in item[key]]
    return mutate


FIELDS: dict[str, tuple[Mutation, str]] = {
    # label: (mutation, the base value, used to draw near-miss strings)
    "production.name": (_set("production", "name"), "jazz"),
    "production.state_dir": (_set("production", "state_dir"), "/var/lib/b/jazz"),
    "production.run_dir": (_set("production", "run_dir"), "/run/b/jazz"),
    "production.log_dir": (_set("production", "log_dir"), "/var/log/b/jazz"),
    "host.vassals_dir": (_set("host", "vassals_dir"), "/etc/uwsgi/vassals"),
    "host.nginx_dir": (_set("host", "nginx_dir"), "/etc/nginx/sites-enabled"),
    "host.nginx[0]": (_set("host", "nginx", 0), "nginx"),
    "host.nginx_user": (_set("host", "nginx_user"), "www-data"),
    "host.emperor_stats": (_set("host", "emperor_stats"), "127.0.0.1:9191"),
    "stages.legacy.virtualenv": (_set("stages", "legacy", "virtualenv"), "/srv/venvs/main"),
    "stages.main.requirements[0]": (_set("stages", "main", "requirements", 0), "Django>=5.2,<6"),
    "stages.main.uid": (_set("stages", "main", "uid"), "app"),
    "stages.main.gid": (_set("stages", "main", "gid"), "app"),
    "stages.main.uwsgi name": (_rename_key("stages", "main", "uwsgi", old="harakiri"), "harakiri"),
    "stages.main.uwsgi value": (_set("stages", "main", "uwsgi", "cheaper-algo"), "spare"),
    "acts.blog.wsgi": (_set("acts", "blog", "wsgi"), "blog.wsgi:application"),
    "acts.blog.path": (_set("acts", "blog", "path"), "/srv/apps/blog"),
    "acts.blog.settings": (_set("acts", "blog", "settings"), "blog.settings"),
    "acts.blog.env name": (_rename_key("acts", "blog", "env", old="BLOG_THEME"), "BLOG_THEME"),
    "acts.blog.env value": (_set("acts", "blog", "env", "BLOG_THEME"), "dark"),
    "acts.blog.static prefix": (_rename_key("acts", "blog", "static", old="/static/"), "/static/"),
    "acts.blog.static dir": (_set("acts", "blog", "static", "/static/"), "/srv/apps/blog/static/"),
    "acts.blog.health": (_set("acts", "blog", "health"), "/healthz"),
    "sesses.blog.uwsgi name": (_rename_key("sesses", "blog", "uwsgi", old="max-requests"), "max-requests"),
    "sesses.blog.uwsgi value": (_set("sesses", "blog", "uwsgi", "procname-prefix"), "blog"),
    "sesses.api.protocol": (_set("sesses", "api", "protocol"), "http"),
    "venues.example.domain": (_set("venues", "example", "domain"), "example.com"),
    "venues.example.aliases[0]": (_set("venues", "example", "aliases", 0), "www.example.com"),
    "venues.internal.listen": (_set("venues", "internal", "listen"), "127.0.0.1:8080"),
    "venues.example.tls.certificate": (_set("venues", "example", "tls", "certificate"), "/etc/ssl/x.pem"),
    "venues.example.tls.key": (_set("venues", "example", "tls", "key"), "/etc/ssl/x.key"),
    "gigs.api-live.path": (_set("gigs", "api-live", "path"), "/api/"),
    "stage name": (_rename("stages", "main"), "main"),
    "act name": (_rename("acts", "blog"), "blog"),
    "sess name": (_rename("sesses", "api"), "api"),
    "venue name": (_rename("venues", "internal"), "internal"),
    "gig name": (_rename("gigs", "blog-preview"), "blog-preview"),
}

NASTY = [";", "}", "{", "\n", "\r", "\t", " ", "", "$(x)", "$x", "${x}", "%n", "%", "%(x)", "@(f)", "a b", "\x00",
         "#", '"', "'", "\\", "\u2028", "\u0085", "\u00a0", "\ufeff", "\u200b", "\u3000", "//", "/..", "/.", "*",
         "[", "?", "-x", " #x", "\\\n", "exec://", "..", "=", "[uwsgi]", "\n[uwsgi]\nexec-asap = id", "x\u0301",
         "%%", "@", "$", ":", "/", "a" * 300, "\x7f", "\x85", "\u0131", "\u212a", "\u01c4"]


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, str]:
    label = draw(st.sampled_from(sorted(FIELDS)))
    base = FIELDS[label][1]
    nasty = st.sampled_from(NASTY)

    def insert(piece: str, at: int) -> str:
        at = min(at, len(base))
        return base[:at] + piece + base[at:]

    value = draw(st.one_of(
        st.text(),
        nasty,
        st.builds(insert, nasty, st.integers(0, 64)),
        st.builds(insert, st.text(min_size=1, max_size=3), st.integers(0, 64)),
        st.builds(lambda a, b: a + base + b, st.text(max_size=2), st.text(max_size=2)),
    ))
    return label, value


def test_arbitrary_strings_never_slip_through(nginx: NginxRunner) -> None:
    stats = Stats()
    base = base_production(nginx.tls)
    check_outputs(base, compile_text(S.to_toml(base)))

    @given(mutation=mutations())
    def arbitrary_strings_never_slip_through(mutation: tuple[str, str]) -> None:
        stats.examples += 1
        label, value = mutation
        data = S.clone(base)
        FIELDS[label][0](data, value)
        text = S.to_toml(data)
        note(f"field {label} = {value!r}")
        try:
            files = compile_text(text)
        except InputError as exc:
            stats.refused.update(d.code for d in exc.diagnostics)
            assert exc.diagnostics, "InputError without a diagnostic"
            for d in exc.diagnostics:
                assert d.code in errors.CODES, f"unknown code in {d}"
                assert d.line >= 1 and d.col >= 1, f"no place in {d}"
                assert d.path, f"no key path in {d}"
                assert d.code != "BS003", f"the TOML writer produced invalid TOML: {d}"
            # The one refusal this example is about: the mutated field's. A field-level error elsewhere
            # would mean the mutation broke something it should not have touched.
            assert all(d.code.startswith("BS2") or d.path.startswith(scope(label)) for d in exc.diagnostics), \
                f"field {label} = {value!r} was refused elsewhere: {[str(d) for d in exc.diagnostics]}"
            return
        stats.accepted += 1
        try:
            check_outputs(data, files)
        except ParseError as exc:
            raise AssertionError(f"field {label} = {value!r} changed how the output parses: {exc}") from exc
        stub = label.startswith("venues.example.tls")
        nginx.add(f"field {label} = {value!r}", text, files, stub_certificates=stub)

    arbitrary_strings_never_slip_through()
    nginx.flush()
    print("\n" + stats.line("property 2", nginx))
    assert not nginx.rejected, nginx.report()
    # Both outcomes must be exercised: a strategy that drew only refused strings would prove nothing
    # about escaping. Seen: about one example in six compiles.
    assert stats.accepted >= stats.examples // 10, stats.line("property 2", nginx)
    assert sum(stats.refused.values()) > 0, stats.line("property 2", nginx)


_RENAMED = {"stage": "stages", "act": "acts", "sess": "sesses", "venue": "venues", "gig": "gigs"}


def scope(label: str) -> tuple[str, ...]:
    """The key-path prefixes a refusal of the mutated field may be reported at."""
    head, _, _ = label.rpartition(" ")
    if not head:
        return (label,)
    if head in _RENAMED:  # a renamed table: the name, and every reference to it
        return (_RENAMED[head], "sesses", "gigs")
    return (head,)


# ------------------------------------------------------------------------------------------ env names

@pytest.mark.parametrize("name", ["DJANGO_SETTINGS_MODULE", "BACKSTAGE_HOSTS", "BACKSTAGE_API_ADDRESS",
                                  "BACKSTAGE_API_PROTOCOL"])
def test_declared_env_is_not_shadowed(name: str, nginx: NginxRunner) -> None:
    """An env name the compiler also sets must be refused, or appear once: uWSGI applies env lines
    in order, so one of two declarations would silently lose."""
    data = base_production(nginx.tls)
    data["acts"]["blog"]["env"][name] = "declared"
    try:
        files = compile_text(S.to_toml(data))
    except InputError as exc:
        # Refused: then for this very name, as an env name.
        assert [(d.code, d.path) for d in exc.diagnostics] == [("BS113", f"acts.blog.env.{name}")], exc
        return
    vassals = _vassals(data, files)
    names = Counter(v.split("=", 1)[0] for k, v in vassals.options["blog"] if k == "env")
    assert names[name] == 1, f"env {name} is written {names[name]} times into the blog vassal"
