"""`backstage apply` end to end: Debian's nginx, a compiled uWSGI Emperor and the showcase Django app,
all private to a temporary directory on 127.0.0.1. Nothing skips: a missing component fails loudly.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from backstage.cli.sandbox import find_components
from conftest import REPO, run_cli, sandbox_head
from harness import TestSandbox, free_port
from loadgen import Load, Target

SHOWCASE = REPO / "examples" / "apps" / "showcase"
Generation = dict[str, str]


@dataclass
class Deployed:
    """The module's one sandbox (slow to start) and the artifacts of generations 1 and 2.

    Tests share it, so each first brings it to the state it needs (`at`, `some_generation`,
    `an_unused_generation`): every test passes alone as well as after the others.
    """

    sandbox: TestSandbox
    tmp: Path
    artifacts: dict[int, Path]

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    def live(self) -> int | None:
        """The generation (1 or 2) that `current` names and that answers; None if none or another is live."""
        try:
            name = Path(os.readlink(self.state / "current")).name
        except OSError:
            return None
        named = [gen for gen, built in self.artifacts.items() if built.name == name]
        return named[0] if named and matching(answers(self.sandbox)) == named else None

    def went_live(self) -> set[str]:
        """The kept generations that were ever live, as `backstage generations` lists them."""
        if not (self.state / "generations").is_dir():
            return set()
        done = run_cli("generations", str(self.state))
        assert done.code == 0, done.err
        return {line[2:].split()[0] for line in done.out.splitlines() if not line.endswith("(never live)")}

    def at(self, gen: int, after: tuple[int, ...] = ()) -> None:
        """Make generation `gen` live unless it is; first make each of `after` live, in order, unless it
        ever was (so that, for `rollback`, they went live before `gen`)."""
        for earlier in after:
            if self.artifacts[earlier].name not in self.went_live():
                self._switch(earlier)
        if self.live() != gen:
            self._switch(gen)

    def some_generation(self) -> int:
        """Generation 1 or 2, whichever is live; generation 1 if neither is."""
        live = self.live()
        if live is None:
            self._switch(1)
            live = 1
        return live

    def broken(self) -> Path:
        """Generation 2 with a site that cannot import: applying it fails and rolls back."""
        return build(production(self.tmp, self.sandbox, 2, broken=True), self.tmp / "build")

    def an_unused_generation(self) -> None:
        """Make sure a kept generation exists that nothing links to: the broken one, rolled back."""
        kept = {p.name for p in (self.state / "generations").iterdir()}
        used = {Path(os.readlink(self.state / "current")).name}
        used |= {Path(os.readlink(link)).relative_to(self.state / "generations").parts[0]
                 for link in self.sandbox.vassals_dir.iterdir()}
        if not kept - used:
            code, _, err = apply(self.broken(), "--ready-timeout=8")
            assert code == 1, err

    def _switch(self, gen: int) -> None:
        code, out, err = apply(self.artifacts[gen])
        assert code == 0, out + err
        assert live_generation(self.sandbox) == gen

# Gigs every generation serves, by (host, path): each must answer below 500 at every instant.
TARGETS = [("www.stage.test", "/"), ("www.stage.test", "/api/"), ("www.stage.test", "/old/"),
           ("www.stage.test", "/new/"), ("quiet.stage.test", "/"), ("www.stage.test", "/static/hello.txt")]


def production(tmp: Path, sandbox: TestSandbox, gen: int, broken: bool = False, extra: str = "",
               label: str = "") -> Path:
    """Generation 1: site, api, old, keep. Generation 2 changes site (version) and the www Venue (an
    alias, which reaches site's and api's BACKSTAGE_HOSTS), removes old, adds new, keeps keep."""
    q = json.dumps
    listen = q(sandbox.listen)
    host = sandbox.host_table()
    acts = "".join(f"""
[acts.{name}]
wsgi = "showcase.wsgi:application"
path = {q(str(SHOWCASE))}
settings = "showcase.settings"
health = "/healthz"
env = {{ SHOWCASE_VERSION = "{version}"{', SHOWCASE_BREAK_IMPORT = "1"' if broken and name == "site" else ""} }}
{'static = { "/static/" = ' + q(str(SHOWCASE / "static") + "/") + " }" if name == "site" else ""}

[sesses.{name}]
act = "{name}"
stage = "main"
""" for name, version in _versions(gen).items())
    gigs = {"site": ("www", "/"), "api": ("www", "/api/"), "old": ("www", "/old/"), "new": ("www", "/new/"),
            "keep": ("quiet", "/")}
    text = sandbox_head("stage", tmp, host) + f"""
[stages.main]
virtualenv = {q(sys.prefix)}
{acts}
[venues.www]
domain = "www.stage.test"
aliases = {json.dumps(["stage.test"] + (["web.stage.test"] if gen >= 2 else []))}
listen = {listen}

[venues.quiet]
domain = "quiet.stage.test"
listen = {listen}
""" + "".join(f'\n[gigs.{name}]\nvenue = "{venue}"\nsess = "{name}"\npath = "{path}"\n'
              for name, (venue, path) in gigs.items() if name in _versions(gen))
    path = tmp / f"gen{gen}{'-broken' if broken else ''}{label}" / "production.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text + extra)
    return path


def _versions(gen: int) -> Generation:
    if gen == 1:
        return {"site": "site-v1", "api": "api-v1", "old": "old-v1", "keep": "keep-v1"}
    return {"site": "site-v2", "api": "api-v1", "new": "new-v1", "keep": "keep-v1"}


def expected(gen: int) -> dict[tuple[str, str], str]:
    """What each target's body starts with when generation `gen` is live."""
    v = _versions(gen)
    return {("www.stage.test", "/"): f"showcase {v['site']} script_name= ",
            ("www.stage.test", "/api/"): f"showcase {v['api']} script_name=/api ",
            ("www.stage.test", "/old/"): ("showcase old-v1 script_name=/old " if gen == 1
                                          else f"showcase {v['site']} script_name= path=/old/"),
            ("www.stage.test", "/new/"): ("showcase new-v1 script_name=/new " if gen == 2
                                          else f"showcase {v['site']} script_name= path=/new/"),
            ("quiet.stage.test", "/"): "showcase keep-v1 ",
            ("www.stage.test", "/static/hello.txt"): "hello"}


def answers(sandbox: TestSandbox) -> dict[tuple[str, str], str]:
    return {target: sandbox.get(*target).text for target in expected(1)}


def matching(bodies: dict[tuple[str, str], str]) -> list[int]:
    """The generations (of 1 and 2) whose answers these are."""
    return [gen for gen in (1, 2) if all(bodies[t].startswith(e) for t, e in expected(gen).items())]


def live_generation(sandbox: TestSandbox) -> int:
    """Which generation answers; fails if the answers are a mix of two."""
    bodies = answers(sandbox)
    matches = matching(bodies)
    assert len(matches) == 1, f"answers match no single generation: {bodies}"
    return matches[0]


def build(source: Path, out: Path) -> Path:
    done = run_cli("build", str(source), "-o", str(out))
    assert done.code == 0, done.err
    return Path(done.out.strip())


def apply(artifact: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    done = run_cli("apply", str(artifact), "--ready-timeout=20", "--health-timeout=10", *extra,
                   env=None if env is None else os.environ | env)
    return done.code, done.out, done.err


def vassal_links(sandbox: TestSandbox) -> list[str]:
    return sorted(p.name for p in sandbox.vassals_dir.iterdir())


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    find_components()
    tmp = tmp_path_factory.mktemp("apply")
    with TestSandbox(tmp / "sandbox") as sandbox:
        artifacts = {gen: build(production(tmp, sandbox, gen), tmp / "build") for gen in (1, 2)}
        yield Deployed(sandbox, tmp, artifacts)


def test_generation_1_serves_every_gig(stage: Deployed) -> None:
    sandbox = stage.sandbox
    tmp = stage.tmp
    artifacts = stage.artifacts
    code, out, err = apply(artifacts[1])
    assert code == 0, out + err
    assert "start 4 vassal(s)" in out
    assert live_generation(sandbox) == 1
    for target, body in expected(1).items():
        assert sandbox.get(*target).text.startswith(body), target
    assert sorted(p.name for p in sandbox.nginx_dir.iterdir()) == ["backstage--stage.conf"]
    assert len(vassal_links(sandbox)) == 4
    assert os.readlink(tmp / "state" / "current") == f"generations/{artifacts[1].name}"


def test_dry_run_prints_the_plan_and_changes_nothing(stage: Deployed) -> None:
    stage.at(1)
    sandbox = stage.sandbox
    artifacts = stage.artifacts
    before = vassal_links(sandbox)
    code, out, _ = apply(artifacts[2], "--dry-run")
    assert code == 0
    lines = out.splitlines()
    assert sum(line.startswith("start vassal stage--") for line in lines) == 3  # site, api, new
    assert sum(line.startswith("keep  vassal stage--keep--") for line in lines) == 1
    assert sum(line.startswith("stop  vassal stage--") for line in lines) == 3  # site, api, old
    assert "nginx: test and reload" in lines
    assert f"live  {artifacts[1].name}" in lines
    # Why each vassal starts: a new Sess, or the settings of its running vassal that differ.
    assert any(line.startswith("start vassal stage--new--") and line.endswith("(new sess new)") for line in lines)
    site = next(line for line in lines if line.startswith("start vassal stage--site--"))
    assert site.endswith(")") and "(sess site changed: " in site and "wsgi-file" in site, site
    assert vassal_links(sandbox) == before and live_generation(sandbox) == 1


def test_plan_is_the_dry_run_and_a_saved_plan_refuses_a_changed_host(stage: Deployed, tmp_path: Path) -> None:
    stage.at(1)
    artifacts = stage.artifacts
    saved = tmp_path / "plan.json"
    planned = run_cli("plan", str(artifacts[2]), "--save", str(saved))
    assert planned.code == 0, planned.err
    assert planned.out == run_cli("apply", str(artifacts[2]), "--dry-run").out  # the same output
    document = json.loads(run_cli("plan", str(artifacts[2]), "--json").out)
    assert document["format"] == 1 and document["artifact"] == artifacts[2].name
    assert document["live"] == artifacts[1].name and document["nginx"] == "test and reload"
    words = planned.out.splitlines()
    for verb in ("start", "keep", "stop"):  # the same vassals, with the same reasons, as the words say
        assert [f"{verb:5} vassal {v['file']}" + (f" ({v['why']})" if v["why"] else "")
                for v in document["vassals"][verb]] == [w for w in words if w.startswith(f"{verb:5} vassal ")]
    assert document["vassals"]["start"] and all(v["why"] for v in document["vassals"]["start"])
    assert run_cli("apply", str(artifacts[2]), "--json").code == 2  # a plan only: with --dry-run
    stage.at(2)  # the host changes after the plan was made
    stage.at(1)
    code, out, err = apply(artifacts[2], "--plan", str(saved))  # gen 1 is live again: the plan still holds
    assert code == 0, out + err
    code, _, err = apply(artifacts[1], "--plan", str(saved))
    assert code == 1 and "the plan" in err and f"is for {artifacts[2].name}" in err, err
    stage.at(1)
    code, _, err = apply(artifacts[2], "--plan", str(tmp_path / "plan.json"), "--dry-run")
    assert code == 0, err
    stale = tmp_path / "stale.json"
    stale.write_text(saved.read_text().replace(artifacts[1].name, "stage-" + "0" * 32))
    code, _, err = apply(artifacts[2], "--plan", str(stale))
    assert code == 1 and "the saved plan is stale" in err, err
    assert live_generation(stage.sandbox) == 1


def test_switch_to_generation_2_under_load_loses_no_request(stage: Deployed) -> None:
    stage.at(1)
    sandbox = stage.sandbox
    artifacts = stage.artifacts
    keep_before = {n: p for n, p in sandbox.vassal_pids().items() if "--keep--" in n}
    assert len(keep_before) == 1
    targets = [Target(host, path) for host, path in TARGETS]
    with Load(sandbox.http_port, targets, clients=20, duration=10.0) as load:
        code, out, err = apply(artifacts[2])
    result = load.result
    print(f"\nswitch under load: {result.summary()}")
    assert code == 0, out + err
    assert result.failures == [], result.summary()
    assert result.total > 1000
    assert all(result.per_target.get(t, 0) > 0 for t in TARGETS), result.per_target
    assert live_generation(sandbox) == 2
    assert {n: p for n, p in sandbox.vassal_pids().items() if "--keep--" in n} == keep_before
    assert len(vassal_links(sandbox)) == 4 and not any("--old--" in n for n in vassal_links(sandbox))
    assert sandbox.get("web.stage.test", "/").text.startswith("showcase site-v2 ")  # the Venue's new alias


def test_generations_lists_both_and_marks_the_current(stage: Deployed) -> None:
    stage.at(2, after=(1,))
    tmp = stage.tmp
    artifacts = stage.artifacts
    done = run_cli("generations", str(tmp / "state"))
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert [line.split()[-2] if line.startswith("*") else line.split()[0] for line in lines] == [
        artifacts[1].name, artifacts[2].name]
    assert lines[-1].startswith(f"* {artifacts[2].name}")


def test_rollback_serves_generation_1_again(stage: Deployed) -> None:
    stage.at(2, after=(1,))
    sandbox = stage.sandbox
    tmp = stage.tmp
    artifacts = stage.artifacts
    with Load(sandbox.http_port, [Target(h, p) for h, p in TARGETS], clients=20, duration=4.0) as load:
        done = run_cli("rollback", str(production(tmp, sandbox, 2)), "--ready-timeout=20")
    assert done.code == 0, done.err
    assert load.result.failures == [], load.result.summary()
    assert live_generation(sandbox) == 1
    done = run_cli("rollback", str(tmp / "state"), "--to", artifacts[2].name.rsplit("-", 1)[1][:12])
    assert done.code == 0, done.err
    assert live_generation(sandbox) == 2


def test_a_generation_that_cannot_import_rolls_back_by_itself(stage: Deployed) -> None:
    stage.at(2)
    sandbox = stage.sandbox
    tmp = stage.tmp
    artifacts = stage.artifacts
    broken = stage.broken()
    links_before = vassal_links(sandbox)
    with Load(sandbox.http_port, [Target(h, p) for h, p in TARGETS], clients=20, duration=3.0) as load:
        code, _, err = apply(broken, "--ready-timeout=8")
    assert code == 1
    assert "sess site" in err and "did not answer" in err
    assert "RuntimeError" in err  # the tail of the vassal's log names the cause
    assert load.result.failures == [], load.result.summary()
    assert live_generation(sandbox) == 2 and vassal_links(sandbox) == links_before
    assert os.readlink(tmp / "state" / "current") == f"generations/{artifacts[2].name}"


@pytest.mark.parametrize("point", ["verified", "installed", "vassals-linked", "vassals-ready", "current-switched",
                                   "nginx-reloaded", "gigs-checked", "stopping-old"])
def test_kill_9_during_apply_leaves_one_generation_and_apply_converges(
        point: str, stage: Deployed) -> None:
    stage.some_generation()
    sandbox = stage.sandbox
    artifacts = stage.artifacts
    start, target = (2, 1) if live_generation(sandbox) == 2 else (1, 2)
    code, _, err = apply(artifacts[target], env={"BACKSTAGE_TEST_CRASH_AT": point})
    assert code == 1, err  # killed
    assert live_generation(sandbox) in (start, target)
    code, out, err = apply(artifacts[target])
    assert code == 0, out + err
    assert live_generation(sandbox) == target
    desired = sorted(p.name for p in (artifacts[target] / "uwsgi").glob("*.ini"))
    assert vassal_links(sandbox) == desired


def test_a_tampered_artifact_is_refused_and_the_host_untouched(
        stage: Deployed) -> None:
    stage.some_generation()
    sandbox = stage.sandbox
    tmp = stage.tmp
    artifacts = stage.artifacts
    copy = tmp / "tampered" / artifacts[1].name
    shutil.copytree(artifacts[1], copy)
    os.chmod(copy / "nginx", 0o755)
    venue = copy / "nginx" / "www.conf"
    os.chmod(venue, 0o644)
    venue.write_text(venue.read_text().replace("server_tokens off;", "server_tokens on;"))
    os.chmod(venue, 0o444)
    links, live = vassal_links(sandbox), live_generation(sandbox)
    code, _, err = apply(copy)
    assert code == 1 and "nginx/www.conf was changed after the build" in err
    assert vassal_links(sandbox) == links and live_generation(sandbox) == live


def test_gc_keeps_the_current_and_every_generation_a_link_uses(
        stage: Deployed) -> None:
    stage.some_generation()
    stage.an_unused_generation()
    sandbox, tmp = stage.sandbox, stage.tmp
    kept = sorted(p.name for p in (tmp / "state" / "generations").iterdir())
    done = run_cli("gc", str(tmp / "state"), "--keep", "1")
    assert done.code == 0, done.err
    left = sorted(p.name for p in (tmp / "state" / "generations").iterdir())
    current = Path(os.readlink(tmp / "state" / "current")).name
    assert current in left
    for link in sandbox.vassals_dir.iterdir():
        assert Path(os.readlink(link)).exists(), f"{link.name} lost its generation"
    removed = set(kept) - set(left)
    assert removed, "a broken generation nothing links to should have gone"
    live_generation(sandbox)


def with_port_sess(version: str, port: int) -> str:
    return f"""
[acts.svc]
wsgi = "showcase.wsgi:application"
path = {json.dumps(str(SHOWCASE))}
settings = "showcase.settings"
health = "/healthz"
env = {{ SHOWCASE_VERSION = "{version}" }}

[sesses.svc]
act = "svc"
stage = "main"
protocol = "http"
port = {port}

[gigs.svc]
venue = "quiet"
sess = "svc"
path = "/svc/"
"""


def test_a_changed_sess_on_the_same_port_is_refused_and_a_new_port_switches(stage: Deployed) -> None:
    stage.at(2)
    sandbox, tmp = stage.sandbox, stage.tmp
    first, second = free_port(), free_port()
    one = build(production(tmp, sandbox, 2, extra=with_port_sess("svc-1", first), label="-svc1"), tmp / "build")
    code, out, err = apply(one)
    assert code == 0, out + err
    assert sandbox.get("quiet.stage.test", "/svc/").text.startswith("showcase svc-1 ")
    links = vassal_links(sandbox)
    same_port = build(production(tmp, sandbox, 2, extra=with_port_sess("svc-2", first), label="-svc2"),
                      tmp / "build")
    code, _, err = apply(same_port)
    assert code == 1 and "keeps its TCP port" in err and f"127.0.0.1:{first}" in err, err
    assert vassal_links(sandbox) == links
    assert sandbox.get("quiet.stage.test", "/svc/").text.startswith("showcase svc-1 ")
    new_port = build(production(tmp, sandbox, 2, extra=with_port_sess("svc-2", second), label="-svc3"),
                     tmp / "build")
    with Load(sandbox.http_port, [Target("quiet.stage.test", "/svc/")], clients=20, duration=3.0) as load:
        code, out, err = apply(new_port)
    assert code == 0, out + err
    assert load.result.failures == [], load.result.summary()
    assert sandbox.get("quiet.stage.test", "/svc/").text.startswith("showcase svc-2 ")
