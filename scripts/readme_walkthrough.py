#!/usr/bin/env python3
"""The README's "Deploying a Django project, from scratch", run for real; prints the transcript.

For a test machine only: it runs as root, uses the production's default directories
(/var/lib/backstage/mysite, /run/..., /var/log/...), /var/lib/mysite and /etc/backstage/mysite, refuses to
start if any of them exists, and removes them afterwards. nginx and the Emperor are private ones (the
test harness's sandbox, given in [host]), so the machine's own are not touched. Needs the test extra
installed (scripts/test does that): python3 scripts/readme-walkthrough [WORKDIR]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "compiler")]
from conftest import host_table  # noqa: E402
from harness import TestSandbox  # noqa: E402

DIRS = ("/var/lib/backstage/mysite", "/run/backstage/mysite", "/var/log/backstage/mysite", "/var/lib/mysite",
        "/etc/backstage/mysite")
if os.geteuid() != 0 or any(os.path.lexists(d) for d in DIRS):
    sys.exit(f"readme-walkthrough: run as root on a test machine where none of {', '.join(DIRS)} exists")
W = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="bs-walk-"))
home = W / "home"
home.mkdir(parents=True)
out = sys.stdout

def sh(cmd, cwd=home, show=True):
    done = subprocess.run(cmd + " 2>&1", shell=True, cwd=cwd, capture_output=True, text=True,
                          env=os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    if show:
        out.write(f"$ {cmd}\n{done.stdout}{done.stderr}")
        out.flush()
    return done

with TestSandbox(W / "sandbox") as sandbox:
    host = sandbox.host_table()
    sh(f"{sys.executable} -m django startproject mysite")
    settings = home / "mysite" / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + '''
# --- read what backstage gives the app ---
import os
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = os.environ["BACKSTAGE_HOSTS"].split()
STATIC_ROOT = os.environ.get("BACKSTAGE_STATIC_ROOT")
DATA_DIR = Path(os.environ["BACKSTAGE_DATA_DIR"])
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "db.sqlite3"}}
MEDIA_ROOT = DATA_DIR / "media"
''')
    urls = home / "mysite" / "mysite" / "urls.py"
    view = 'path("", lambda request: HttpResponse("hello, v1\\n")),'
    text = urls.read_text().replace("from django.urls import path", "from django.http import HttpResponse\n"
                                    "from django.urls import path")
    urls.write_text(text.replace("urlpatterns = [", f"urlpatterns = [\n    {view}"))
    q = json.dumps
    prod = f'''[production]
name = "mysite"

# this run's private nginx and Emperor; on a real host, leave [host] out
{host_table(host)}
[stages.web]
python = {q(sys.executable)}
requirements = ["Django>=5.2,<6"]

[acts.mysite]
wsgi = "mysite.wsgi"
source = "mysite"
settings = "mysite.settings"
secrets = {{ DJANGO_SECRET_KEY = "/etc/backstage/mysite/secret_key" }}
data = "/var/lib/mysite"

[acts.mysite.django]
collectstatic = "/static/"
migrate = true

[sesses.mysite]
act = "mysite"
stage = "web"

[venues.www]
domain = "mysite.example"
listen = {q(sandbox.listen)}

[gigs.mysite]
venue = "www"
sess = "mysite"
'''
    (home / "production.toml").write_text(prod)
    sh("install -d -m 0700 /etc/backstage/mysite")
    key = "/etc/backstage/mysite/secret_key"
    sh(f"python3 -c 'import secrets; print(secrets.token_urlsafe(50))' > {key} && chmod 0600 {key}")
    sh("backstage check production.toml")
    sh("backstage apply production.toml")
    sh(f"curl -s -H 'Host: mysite.example' http://{sandbox.listen}/")
    css = f"http://{sandbox.listen}/static/admin/css/base.css"
    sh(f"curl -s -o /dev/null -w '%{{http_code}}\\n' -H 'Host: mysite.example' {css}")
    sh("ls -ld /var/lib/mysite; ls -l /var/lib/mysite")
    urls.write_text(urls.read_text().replace("hello, v1", "hello, v2"))
    sh("backstage apply production.toml")
    sh(f"curl -s -H 'Host: mysite.example' http://{sandbox.listen}/")
    sh(f"python3 -c 'import secrets; print(secrets.token_urlsafe(50))' > {key}")
    sh("backstage apply --restart mysite production.toml")
    first = sh("backstage generations production.toml").stdout.split()[0].rsplit("-", 1)[1][:8]
    sh(f"backstage rollback --to {first} production.toml")
    sh(f"curl -s -H 'Host: mysite.example' http://{sandbox.listen}/")
    # a broken settings file: ALLOWED_HOSTS empty
    settings.write_text(settings.read_text().replace('os.environ["BACKSTAGE_HOSTS"].split()', "[]"))
    sh("backstage apply production.toml")
    sh(f"curl -s -H 'Host: mysite.example' http://{sandbox.listen}/")
    for link in Path(host["vassals_dir"]).iterdir():
        link.unlink()
    time.sleep(2)

for made in DIRS:
    shutil.rmtree(made, ignore_errors=True)
