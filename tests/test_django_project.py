"""A real Django project deployed with no manual step: Wagtail's starter site (`wagtail start`, run from a
throwaway virtualenv the test makes with uv), plus a small app of the test's own with a model, a
migration and an upload view, deployed from `source` with a Stage built from `requirements`,
`collectstatic` (Wagtail's production settings use ManifestStaticFilesStorage), `migrate`, the default
`check --deploy`, a `data` directory for the database and the uploads, and SECRET_KEY given through
`secrets` from a file whose content uWSGI would mangle if it ever parsed it. On Debian's nginx and a
compiled uWSGI Emperor; nothing is mocked.

The tests share one sandbox and one project; each first brings the host to the state it needs, so each
also passes alone.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from backstage.agent.store import find_uv
from backstage.cli.sandbox import LOCALHOST
from conftest import run_cli, sandbox_head
from harness import Response, TestSandbox

DOMAIN = "mysite.test"
WAGTAIL = "wagtail>=8.0,<8.1"  # the starter's own requirements.txt pins Django>=6.1, which 3.11 cannot install
WELCOME = "Welcome to your new Wagtail site!"

# What `check --deploy` wants of a key (50+ characters, 5+ distinct), holding what uWSGI would expand or
# a shell would interpret: `%`, `$(`, `@(`, `%(`, both quotes, a backslash, spaces inside.
SECRET_KEY = "k%3$(id)'\"x @(exec://id) %(home) \\n" + "-Zq8vT2LmR0aW5nIHRoZSB3aG9sZSB0ZXN0IHN1aXRl"

SETTINGS_TAIL = """
# --- added by the test, as a user deploying with backstage would ---
import os as _os
from pathlib import Path as _Path

SECRET_KEY = _os.environ["DJANGO_SECRET_KEY"]
ALLOWED_HOSTS = _os.environ.get("BACKSTAGE_HOSTS", "").split()
STATIC_ROOT = _os.environ.get("BACKSTAGE_STATIC_ROOT")
DATA_DIR = _Path(_os.environ["BACKSTAGE_DATA_DIR"])
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "db.sqlite3"}}
MEDIA_ROOT = DATA_DIR / "media"
MEDIA_URL = "/media/"
INSTALLED_APPS = [*INSTALLED_APPS, "uploads"]
"""

URLS_TAIL = """
# --- added by the test ---
from uploads import views as _uploads

urlpatterns = [
    path("probe/version", _uploads.version),
    path("probe/secret", _uploads.secret_digest),
    path("probe/upload", _uploads.upload),
    path("probe/uploads", _uploads.uploads),
    *urlpatterns,
]
"""

APP = {
    "__init__.py": "",
    "apps.py": """\
from django.apps import AppConfig


class UploadsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "uploads"
""",
    "models.py": """\
from django.db import models


class Upload(models.Model):
    title = models.CharField(max_length=200)
    file = models.FileField(upload_to="uploads/")
""",
    "migrations/__init__.py": "",
    "migrations/0001_initial.py": """\
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Upload",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("title", models.CharField(max_length=200)),
                ("file", models.FileField(upload_to="uploads/")),
            ],
        ),
    ]
""",
    "views.py": """\
import hashlib

from django.conf import settings
from django.http import HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .models import Upload

VERSION = "v1"


def version(request):
    return HttpResponse(f"mysite {VERSION}")


def secret_digest(request):
    return HttpResponse(hashlib.sha256(settings.SECRET_KEY.encode("utf-8", "surrogateescape")).hexdigest())


@csrf_exempt
def upload(request):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    row = Upload.objects.create(title=request.POST["title"], file=request.FILES["file"])
    return JsonResponse({"id": row.pk, "name": row.file.name, "url": row.file.url})


def uploads(request):
    return HttpResponse("".join(f"{row.pk} {row.title} {row.file.name}\\n" for row in Upload.objects.order_by("pk")))
""",
}


@dataclass(frozen=True)
class Gen:
    """One generation of the project: its version string, and what else differs from the first."""

    label: str
    version: str
    settings_tail: str = ""  # appended to the production settings
    css: str = ""  # appended to mysite.css
    secret: str = "key"  # which file under secrets/ holds DJANGO_SECRET_KEY


GEN1 = Gen("gen1", "v1")
GEN2 = Gen("gen2", "v2", css="/* generation 2 */\n")
NO_HOSTS = Gen("no-hosts", "v-no-hosts", settings_tail="\nALLOWED_HOSTS = []\n")
OPEN_SECRET = Gen("open-secret", "v-open-secret", secret="open-key")
MISSING_SECRET = Gen("missing-secret", "v-missing-secret", secret="missing-key")


@dataclass
class Site:
    sandbox: TestSandbox
    tmp: Path
    project: Path
    built: dict[str, Path] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    @property
    def data(self) -> Path:
        return self.tmp / "data" / "mysite"

    def secret(self, name: str) -> Path:
        return self.tmp / "secrets" / name


def wagtail_start(tmp: Path) -> Path:
    """The starter site as a user gets it: `wagtail start` from a throwaway virtualenv."""
    uv = find_uv()  # as the agent finds it: on PATH, else beside this Python (the tests' virtualenv)
    if uv is None:
        pytest.fail("uv is not installed; .ci/run installs it (pip install uv, a test dependency)")
    tools = tmp / "tools"
    subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(tools)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "-p", str(tools / "bin" / "python"), WAGTAIL], check=True)
    project = tmp / "project"
    project.mkdir()
    subprocess.run([str(tools / "bin" / "wagtail"), "start", "mysite", str(project)], check=True,
                   capture_output=True)
    (project / "requirements.txt").write_text(WAGTAIL + "\n")
    production = project / "mysite" / "settings" / "production.py"
    production.write_text(production.read_text() + SETTINGS_TAIL)
    urls = project / "mysite" / "urls.py"
    urls.write_text(urls.read_text() + URLS_TAIL)
    for name, text in APP.items():
        (project / "uploads" / name).parent.mkdir(parents=True, exist_ok=True)
        (project / "uploads" / name).write_text(text)
    return project


def write_secrets(site: Site) -> None:
    directory = site.tmp / "secrets"
    directory.mkdir(mode=0o700)
    for name, mode in (("key", 0o600), ("open-key", 0o644)):
        path = directory / name
        path.write_text(SECRET_KEY + "\n")  # one trailing newline, which the value does not keep
        path.chmod(mode)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("django-project")
    project = wagtail_start(tmp)
    sandbox = TestSandbox(tmp / "sandbox")
    with sandbox:
        made = Site(sandbox, tmp, project)
        write_secrets(made)
        yield made


def production(site: Site, gen: Gen) -> Path:
    """The production file of `gen`, over a copy of the project as of `gen` (a user's checkout)."""
    source = site.tmp / f"src-{gen.label}"
    if not source.exists():
        subprocess.run(["cp", "-a", str(site.project), str(source)], check=True)
        views = source / "uploads" / "views.py"
        views.write_text(views.read_text().replace('VERSION = "v1"', f'VERSION = "{gen.version}"'))
        settings = source / "mysite" / "settings" / "production.py"
        settings.write_text(settings.read_text() + gen.settings_tail)
        css = source / "mysite" / "static" / "css" / "mysite.css"
        css.write_text(css.read_text() + gen.css)
    q = json.dumps
    text = sandbox_head("mysite", site.tmp, site.sandbox.host_table()) + f"""
[stages.main]
python = {q(sys.executable)}
requirements = {q([WAGTAIL])}

[acts.mysite]
wsgi = "mysite.wsgi"
source = {q(str(source))}
settings = "mysite.settings.production"
secrets = {{ DJANGO_SECRET_KEY = {q(str(site.secret(gen.secret)))} }}
data = {q(str(site.data))}
static = {{ "/media/" = {q(str(site.data / "media") + "/")} }}

[acts.mysite.django]
collectstatic = "/static/"
migrate = true

[sesses.mysite]
act = "mysite"
stage = "main"

[venues.www]
domain = {q(DOMAIN)}
listen = {q(site.sandbox.listen)}

[gigs.mysite]
venue = "www"
sess = "mysite"
"""
    path = site.tmp / f"production-{gen.label}.toml"
    path.write_text(text)
    return path


def build(site: Site, gen: Gen) -> Path:
    if gen.label not in site.built:
        done = run_cli("build", str(production(site, gen)), "-o", str(site.tmp / "build"))
        assert done.code == 0, done.err
        site.built[gen.label] = Path(done.out.strip())
    return site.built[gen.label]


def apply(site: Site, gen: Gen) -> tuple[int, str]:
    done = run_cli("apply", str(build(site, gen)), "--ready-timeout=90", "--health-timeout=30")
    assert "Traceback (most recent call last)" not in done.err.split("the app's log")[0], done.err
    return done.code, done.out + done.err


def get(site: Site, path: str) -> Response:
    return site.sandbox.get(DOMAIN, path, timeout=30)


def post_file(site: Site, path: str, fields: dict[str, str], name: str, content: bytes) -> Response:
    """A multipart/form-data POST through the sandbox's nginx: `fields`, and one file as "file"."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
             for key, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                 "Content-Type: text/plain\r\n\r\n".encode() + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    connection = http.client.HTTPConnection(LOCALHOST, site.sandbox.http_port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers={
            "Host": DOMAIN, "Connection": "close", "Content-Type": f"multipart/form-data; boundary={boundary}"})
        reply = connection.getresponse()
        return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
    finally:
        connection.close()


def serving(site: Site) -> str | None:
    """The version the live generation's code says, or None when the site does not answer 200."""
    try:
        reply = get(site, "/probe/version")
    except OSError:
        return None
    return reply.text.removeprefix("mysite ") if reply.status == 200 else None


def live(site: Site, gen: Gen) -> None:
    """Make `gen` the live generation, if it is not."""
    if serving(site) != gen.version:
        code, out = apply(site, gen)
        assert code == 0, out
    assert serving(site) == gen.version


def assert_serves(site: Site, gen: Gen) -> None:
    """`gen` serves: Wagtail's home page, its own code, the secret, and its own collected static files."""
    home = get(site, "/")
    assert home.status == 200 and WELCOME in home.text, home.text[:2000]
    assert serving(site) == gen.version
    digest = get(site, "/probe/secret")
    assert (digest.status, digest.text) == (200, hashlib.sha256(SECRET_KEY.encode()).hexdigest())
    # The page names ManifestStaticFilesStorage's hashed file, which nginx serves from the Act's static
    # store path: code and static files of one generation.
    found = re.search(r'href="(/static/css/mysite\.[0-9a-f]{12}\.css)"', home.text)
    assert found, home.text[:2000]
    css = get(site, found[1])
    expected = (site.tmp / f"src-{gen.label}" / "mysite" / "static" / "css" / "mysite.css").read_text()
    assert (css.status, css.text) == (200, expected)
    assert get(site, "/static/css/welcome_page.css").status == 200


def snapshot(site: Site) -> tuple[str, set[str], set[str], str]:
    """What an apply changes on the host: current, the store, the generations, the history."""
    store = {p.name for p in (site.state / "store").iterdir()}
    generations = {p.name for p in (site.state / "generations").iterdir()}
    return os.readlink(site.state / "current"), store, generations, (site.state / "history").read_text()


def assert_vassals(site: Site, gen: Gen) -> None:
    """Exactly `gen`'s vassals are linked for the Emperor: a failed or refused apply left none of its own."""
    linked = sorted(p.name for p in site.sandbox.vassals_dir.iterdir() if not p.name.startswith("."))
    assert linked == sorted(p.name for p in (build(site, gen) / "uwsgi").glob("*.ini"))


def test_the_wagtail_starter_site_deploys_with_no_manual_step(site: Site) -> None:
    if serving(site) != GEN1.version:
        code, out = apply(site, GEN1)
        assert code == 0, out
        # The default release step ran: `check --deploy`, whose warnings (no HSTS, no HTTPS redirect...) it
        # printed without failing the apply.
        assert "check --deploy" in out and "security.W004" in out, out
    assert_serves(site, GEN1)
    # The data directory: made by apply (0750), holding the migrated database.
    info = os.stat(site.data)
    assert stat.S_IMODE(info.st_mode) == 0o750 and stat.S_ISDIR(info.st_mode)
    assert (site.data / "db.sqlite3").stat().st_size > 0
    # The secret never entered the artifact or the store's entry point.
    artifact = build(site, GEN1)
    needle = SECRET_KEY.encode()
    for root in (artifact, *(site.state / "store").glob("entry-*")):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert needle not in path.read_bytes(), path


def test_an_upload_lives_in_the_data_dir_across_a_new_generation_and_a_rollback(site: Site) -> None:
    live(site, GEN1)
    content = f"uploaded by the test {uuid.uuid4().hex}\n".encode()
    title = f"note-{uuid.uuid4().hex[:8]}"
    reply = post_file(site, "/probe/upload", {"title": title}, f"{title}.txt", content)
    assert reply.status == 200, reply.text[:2000]
    stored = json.loads(reply.body)
    assert stored["url"] == f"/media/{stored['name']}"
    on_disk = site.data / "media" / stored["name"]
    assert on_disk.read_bytes() == content

    def still_there() -> None:
        media = get(site, stored["url"])
        assert (media.status, media.body) == (200, content)
        rows = get(site, "/probe/uploads")
        assert rows.status == 200 and f"{stored['id']} {title} {stored['name']}\n" in rows.text, rows.text

    still_there()
    code, out = apply(site, GEN2)
    assert code == 0, out
    assert_serves(site, GEN2)
    still_there()
    done = run_cli("rollback", str(site.state), "--ready-timeout=90", "--health-timeout=30")
    assert done.code == 0, done.out + done.err
    assert_serves(site, GEN1)
    still_there()
    assert on_disk.read_bytes() == content


def test_settings_with_empty_allowed_hosts_are_refused_and_the_old_generation_serves(site: Site) -> None:
    live(site, GEN1)
    code, out = apply(site, NO_HOSTS)
    assert code == 1, out
    assert "DisallowedHost" in out and repr(DOMAIN) in out and "BACKSTAGE_HOSTS" in out, out
    assert_serves(site, GEN1)
    assert_vassals(site, GEN1)


@pytest.mark.parametrize("gen", [OPEN_SECRET, MISSING_SECRET], ids=["mode-0644", "missing"])
def test_a_secret_file_that_cannot_be_used_is_refused_before_anything_changes(site: Site, gen: Gen) -> None:
    live(site, GEN1)
    artifact = build(site, gen)
    before = snapshot(site)
    code, out = apply(site, gen)
    assert code == 1, out
    assert str(site.secret(gen.secret)) in out, out
    assert "nothing was changed" in out, out
    assert snapshot(site) == before, f"{artifact.name} changed the host"
    assert_serves(site, GEN1)
    assert_vassals(site, GEN1)
